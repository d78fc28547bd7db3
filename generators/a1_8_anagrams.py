"""Part A 1.8: visual anagrams, images that show one prompt upright and another upside down."""
import torch

from diffusion.edits import visual_anagram
from diffusion.views import Identity, view_named
from generators._parta import (GUIDANCE, JUDGE, STRIDED, STRIDED_SMOKE, backend_label, denoiser, digit_judge, item,
                               part_a, provenance, timesteps, two_readings)

SECTION = part_a(
    id="a1_8_anagrams",
    title="Part A 1.8: visual anagrams",
    # The pairs and the view (a vertical flip for photos, a half turn for digits) come from the backend.
    # On digits every sample of `judged_per_pair` is read by the independent classifier; the first
    # `samples_per_pair` are shown.
    params={**STRIDED, **GUIDANCE, "samples_per_pair": 2, "judged_per_pair": 32},
    smoke={**STRIDED_SMOKE, "samples_per_pair": 1, "judged_per_pair": 2},
    depends=(JUDGE,),
)

VIEW_WORDS = {"flip_vertical": ("flipped upside down", "flipped"), "rotate_180": ("turned upside down", "turned")}


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    view = view_named(p.view)
    upside_down, done = VIEW_WORDS[view.name]
    judge = digit_judge(ctx)
    judged_n, shown_n = p.judged_per_pair, p.samples_per_pair
    n = max(judged_n, shown_n) if judge else shown_n
    judged = []
    for k, (upright, other) in enumerate(p.pairs, start=1):
        images = visual_anagram(den, [den.encode(upright), den.encode(other)], ctx.generator(f"pair{k}"),
                                views=(Identity(), view), n=n, timesteps=timesteps(ctx), guidance=p.guidance)
        viewed = view.apply(images)
        items = []
        for i in range(shown_n):
            items += [item(ctx, images[i], f"sample {i + 1}: {upright}", f"sample {i + 1} upright, meant to show {upright}"),
                      item(ctx, viewed[i], f"sample {i + 1} {done}: {other}",
                           f"sample {i + 1} {upside_down}, meant to show {other}")]
        measured = ""
        if judge:
            read, digit_of = judge
            want_a, want_b = digit_of(upright), digit_of(other)
            up_ok, down_ok, both = two_readings(read(images), want_a, read(viewed), want_b)
            judged.append({"upright": want_a, "turned": want_b, "n": n, "upright_ok": up_ok,
                           "turned_ok": down_ok, "both": both})
            measured = (f" The independent MNIST classifier reads {up_ok} of {n} samples as {want_a} upright, "
                        f"{down_ok} of {n} as {want_b} {done}, and {both} of {n} as both; the first "
                        f"{shown_n} are shown, none picked.")
        ctx.save_gallery(f"a1_8_anagram{k}", [{"caption": f"upright: “{upright}”; {upside_down}: “{other}”",
                                               "items": items}],
                         caption=f"Visual anagram {k}: at every step the CFG noise estimate (γ = {p.guidance}) for "
                                 f"“{upright}” on x_t and the estimate for “{other}” on x_t {upside_down} (and "
                                 f"turned back) are averaged; each sample is shown upright and {done}; "
                                 f"{backend_label(ctx)}." + (measured or f" {n} samples, none picked."),
                         alt=f"Generated images shown upright ({upright}) and {upside_down} ({other}).",
                         meta=provenance(ctx, prompts=[upright, other], guidance=p.guidance, view=view.name,
                                         display="anagram"))
    if judged:
        ctx.save_json("judged", judged)
