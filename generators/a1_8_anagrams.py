"""Part A 1.8: visual anagrams, images that show one prompt upright and another upside down."""
import torch

from builder.section import Section
from diffusion.edits import visual_anagram
from diffusion.views import FlipVertical, Identity
from generators._parta import INPUTS, backend_label, item, pick, provenance, timesteps

SECTION = Section(
    id="a1_8_anagrams",
    title="Part A 1.8: visual anagrams",
    params={"start": 990, "stride": 30, "guidance": 7.0, "samples_per_pair": 2,
            "pairs": {"deepfloyd": [["an oil painting of people around a campfire", "an oil painting of an old man"],
                                    ["an oil painting of a snowy mountain village", "a photo of a hipster barista"],
                                    ["a lithograph of waterfalls", "a lithograph of a skull"]],
                      "local": [["a handwritten 6", "a handwritten 9"], ["a handwritten 2", "a handwritten 7"],
                                ["a handwritten 1", "a handwritten 4"]]}},
    profiles={"smoke": {"stride": 200, "samples_per_pair": 1}},
    inputs=INPUTS,
    uses_backend=True,
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = ctx.backend
    flip = FlipVertical()
    for k, (upright, flipped) in enumerate(pick(ctx, p.pairs), start=1):
        images = visual_anagram(den, [den.encode(upright), den.encode(flipped)], ctx.generator(f"pair{k}"),
                                views=(Identity(), flip), n=p.samples_per_pair, timesteps=timesteps(ctx),
                                guidance=p.guidance)
        items = []
        for i, x in enumerate(images, start=1):
            items += [item(ctx, x, f"sample {i}: {upright}", f"sample {i} upright, meant to show {upright}"),
                      item(ctx, flip.apply(x[None])[0], f"sample {i} flipped: {flipped}",
                           f"sample {i} upside down, meant to show {flipped}")]
        ctx.save_gallery(f"a1_8_anagram{k}", [{"caption": f"upright: “{upright}”; upside down: “{flipped}”",
                                               "items": items}],
                         caption=f"Visual anagram {k}: at every step the CFG noise estimate (γ = {p.guidance}) for "
                                 f"“{upright}” on x_t and the flipped-back estimate for “{flipped}” on flip(x_t) are "
                                 f"averaged; {p.samples_per_pair} samples, none picked, each shown upright and "
                                 f"flipped; {backend_label(ctx)}.",
                         alt=f"Generated images shown upright ({upright}) and upside down ({flipped}).",
                         meta=provenance(ctx, prompts=[upright, flipped], guidance=p.guidance, view="flip vertical",
                                         display="anagram"))
