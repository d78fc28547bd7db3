"""Part A 1.7.3: text-conditioned image-to-image translation."""
import torch

from builder.section import Section
from generators._parta import INPUTS, backend_label, pick, provenance, sdedit_rows

SECTION = Section(
    id="a1_7_3_text",
    title="Part A 1.7.3: text-conditioned image-to-image translation",
    params={"start": 990, "stride": 30, "i_starts": [1, 3, 5, 7, 10, 20], "guidance": 7.0,
            "prompts": {"deepfloyd": ["a pencil", "a photo of a dog", "an oil painting of a snowy mountain village"],
                        "local": ["a handwritten 1", "a handwritten 3", "a handwritten 8"]}},
    profiles={"smoke": {"stride": 200, "i_starts": [1, 3]}},
    inputs=INPUTS,
    uses_backend=True,
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    prompts = pick(ctx, p.prompts)
    ctx.save_gallery("a1_7_3_text", sdedit_rows(ctx, ["test", "own1", "own2"], prompts, "text"),
                     caption=f"Text-conditioned translation: SDEdit at i_start = {p.i_starts} with a text prompt "
                             f"instead of the neutral one (CFG γ = {p.guidance}, {backend_label(ctx)}).",
                     alt="Rows of images that turn from the prompt's subject into the input image as i_start grows.",
                     meta=provenance(ctx, i_starts=p.i_starts, guidance=p.guidance, prompts=prompts))
