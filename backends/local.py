"""The local backend: the class-conditioned MNIST UNet that Part B trains, on 28 x 28 digits.

It needs no weights and runs on a CPU; the model comes from section ``b3_train_class``, so the Part A
sections depend on that section when this backend is selected. Its prompts are the class captions,
and its "test image" and "own images" are MNIST test digits.
"""
from __future__ import annotations

from builder.graph.engine import Resource

from . import RESOURCE, Backend, model_code

MODEL_SECTION = "b3_train_class"

_DIGITS = {"test": {"mnist_test": 0, "role": "test image"}, "own1": {"mnist_test": 1, "role": "own image"},
           "own2": {"mnist_test": 18, "role": "own image"}}
_DRAWN = {"web": {"file": "typed_digit7.png", "description": "a typed 7"},
          "drawn1": {"file": "sketch_digit4.png", "description": "the sketched 4"},
          "drawn2": {"file": "sketch_digit2.png", "description": "the sketched 2"}}

# What this backend gives each Part A section, on top of the section's own parameters.
PARAMS = {
    "a0_setup": {"prompts": ["a handwritten 3", "a handwritten 5", "a handwritten 8"]},
    "a1_denoising": {"inputs": {"test": _DIGITS["test"]}},
    "a1_4_iterative": {"inputs": {"test": _DIGITS["test"]}},
    "a1_5_sampling": {"cfg_prompts": ["a handwritten 0", "a handwritten 1", "a handwritten 2", "a handwritten 3",
                                      "a handwritten 4"]},
    "a1_7_sdedit": {"inputs": {**_DIGITS, **_DRAWN}},
    # Masks are rectangles (left, top, right, bottom) as fractions of the image side.
    "a1_7_2_inpaint": {"inputs": _DIGITS, "masks": {"test": [0.0, 0.0, 1.0, 0.45], "own1": [0.0, 0.5, 1.0, 1.0],
                                                    "own2": [0.5, 0.0, 1.0, 1.0]}},
    "a1_7_3_text": {"inputs": _DIGITS, "prompts": ["a handwritten 1", "a handwritten 3", "a handwritten 8"]},
    # A half turn, not a mirror: it is what makes a 6 a 9 (measured pairs: content/a18-anagrams.md).
    "a1_8_anagrams": {"view": "rotate_180",
                      "pairs": [["a handwritten 6", "a handwritten 9"], ["a handwritten 2", "a handwritten 8"],
                                ["a handwritten 3", "a handwritten 5"]]},
    # The low-pass as (kernel, sigma) in pixels. The course's sigma = 2 px (at 64 x 64) works at 28 x 28 as
    # well; scaled down with the image (0.875 px) the low-frequency digit took the whole image.
    "a1_9_hybrids": {"blur": [17, 2.0],
                     "pairs": [["a handwritten 1", "a handwritten 7"], ["a handwritten 0", "a handwritten 8"],
                               ["a handwritten 3", "a handwritten 5"]]},
}

# What the pages say of this backend's domain, place by place (backends.WORDS): Markdown, with the
# pages' helpers (param, ref, build ...).
WORDS = {
    "overview": """**Part A here is not DeepFloyd IF.** The course drives DeepFloyd IF, a text-to-image model whose
weights take gigabytes and a GPU to run; this edition was built without them{% if build.device == "cpu" %}, on a CPU{% endif %}, so every
Part A technique runs on the project's own small model instead: the class-conditioned MNIST
model that Part B trains. Its "prompts" are the ten digit classes, its images are 28 × 28
handwritten digits, and the test image and "own images" of the course are MNIST test digits.
The loops and edits are the same code that runs on IF (`python build.py --backend deepfloyd`
on a GPU with the weights), and each Part A section says where digits make a technique hard to
show.""",
    "setup_backend": """This build uses the **local model**, so every figure of Part A shows handwritten digits, not the
photographs of the course: that model needs no weights to download and runs even on a laptop CPU. Run `python build.py --backend deepfloyd` on
a GPU with the DeepFloyd weights to get the same sections on IF. Where a technique cannot be
shown convincingly on digits, the section says so and shows the real attempt anyway.""",
    "unguided_samples": """For the local model that prompt is the *null class*, so these are unconditional samples: nothing
tells the model which digit to draw. {{ ref("sec-time-sampling") }} measures how such samples spread over the ten
digits and how far they are from real ones.""",
    "cfg_prompts": """On the local model “a high quality photo” and the empty prompt are the same null class, so
guiding towards it would change nothing; this section therefore guides towards five digit
classes instead, with $\\gamma = {{ param("a1_5_sampling", "guidance") }}$. {{ ref("sec-class-sampling") }} measures, with an
independent classifier, how often guided samples show the digit that was asked for.""",
    "sdedit_inputs": """{% set inputs = param("a1_7_sdedit", "inputs") %}
The course asks for the test image and two images of one's own; on this backend all three are
MNIST test digits (indices {{ inputs.test.mnist_test }}, {{ inputs.own1.mnist_test }} and {{ inputs.own2.mnist_test }}), since the model knows nothing but digits.""",
    "sdedit_reading": """On digits the question each row answers is simple: from which start does the result stay the
digit it was, and from which does the model write one of its own choosing? Noise added at an
early start wipes out the stroke, so there the model is free; at a late start most of the
stroke survives for it to follow.""",
    "web_image": "a typed image",
    "edits_reading": """The typed 7 and the two sketches have cleaner, more uniform strokes than MNIST digits; each row
shows what the model makes of them from each start.""",
    "inpaint_reading": """On a 28 × 28 digit a mask covers a large share of the stroke, so nothing forces the model to
complete the same digit: any digit that fits the visible part will do. The pixels outside the
mask stay exactly as they were.""",
    "hybrid_blur": """
On 28 × 28 digits the same $\\sigma$, in pixels, is what works: scaled down with the image
($\\sigma = 0.875$) the split falls inside a stroke two or three pixels wide, and the low-frequency
digit takes the whole image;
much larger, and the high-frequency digit takes it.""",
}


def _add_options(group) -> None:
    pass  # nothing to choose: the model is the one this build trains


def _load(ctx):
    from diffusion.local_denoiser import LocalBackend

    up = ctx.upstream(MODEL_SECTION)
    return LocalBackend.from_model(up.model("final"), up.model_meta("final")["schedule"],
                                   checkpoint_sha256=up.model_sha("final"), device=ctx.device)


def _resource(args, device, project) -> Resource:
    identity = {"name": "local", "domain": "digits", "label": "the local class-conditioned MNIST UNet",
                "model": f"class-conditioned MNIST UNet trained by {MODEL_SECTION}", "dtype": "float32",
                "code": model_code(project, "diffusion.local_denoiser")}
    return Resource(RESOURCE, identity, depends=(MODEL_SECTION,), load=_load,
                    params=lambda section, profile: PARAMS.get(section, {}))


BACKEND = Backend(
    name="local", words=WORDS, auto_order=90,
    help="the class-conditioned MNIST UNet that Part B trains (CPU, no weights)",
    add_options=_add_options, available=lambda args, device: True, resource=_resource)
