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


def _add_options(group) -> None:
    pass  # nothing to choose: the model is the one this build trains


def _load(ctx):
    from diffusion.backends.local import LocalBackend

    up = ctx.upstream(MODEL_SECTION)
    return LocalBackend.from_model(up.model("final"), up.model_meta("final")["schedule"],
                                   checkpoint_sha256=up.model_sha("final"), device=ctx.device)


def _resource(args, device, project) -> Resource:
    identity = {"name": "local", "domain": "digits", "label": "the local class-conditioned MNIST UNet",
                "model": f"class-conditioned MNIST UNet trained by {MODEL_SECTION}", "dtype": "float32",
                "code": model_code(project, "diffusion.backends.local")}
    return Resource(RESOURCE, identity, depends=(MODEL_SECTION,), load=_load,
                    params=lambda section, profile: PARAMS.get(section, {}))


BACKEND = Backend(
    name="local", domain="digits",
    help="the class-conditioned MNIST UNet that Part B trains (CPU, no weights)",
    add_options=_add_options, available=lambda args, device: True, resource=_resource)
