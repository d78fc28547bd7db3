"""Part A 1.9: hybrid images, one prompt in the low frequencies and another in the high."""
import torch
import torch.nn.functional as F

from diffusion.edits import hybrid
from generators._parta import (GUIDANCE, JUDGE, STRIDED, STRIDED_SMOKE, backend_label, denoiser, digit_judge, item,
                               part_a, provenance, timesteps, two_readings)

SECTION = part_a(
    id="a1_9_hybrids",
    title="Part A 1.9: hybrid images",
    # On digits every one of `judged_per_pair` samples is read by the independent classifier twice: at
    # full size, and seen small (shrunk to `seen_small_px` pixels, as from afar); the first
    # `samples_per_pair` are shown.
    # The pairs and the low-pass ("blur": kernel taps and sigma in pixels) come from the backend.
    params={**STRIDED, **GUIDANCE, "samples_per_pair": 2, "judged_per_pair": 32, "seen_small_px": 8,
            "display_px": {"large": 160, "small": 32}},
    smoke={**STRIDED_SMOKE, "samples_per_pair": 1, "judged_per_pair": 2},
    depends=(JUDGE,),
)


def seen_small(x: torch.Tensor, px: int) -> torch.Tensor:
    """The image as a small copy shows it: area-averaged down to ``px`` pixels a side, then enlarged
    back (bilinear) to its own size, which is what a classifier of full-size digits can read."""
    size = x.shape[-2:]
    return F.interpolate(F.interpolate(x.float(), size=(px, px), mode="area"), size=size, mode="bilinear",
                         align_corners=False)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    kernel, sigma = p.blur  # (taps, sigma in pixels), from the backend
    judge = digit_judge(ctx)
    judged_n, shown_n, small_px = p.judged_per_pair, p.samples_per_pair, p.seen_small_px
    n = max(judged_n, shown_n) if judge else shown_n
    judged = []
    for k, (low, high) in enumerate(p.pairs, start=1):
        images = hybrid(den, den.encode(low), den.encode(high), ctx.generator(f"pair{k}"), n=n,
                        kernel_size=kernel, sigma=sigma, timesteps=timesteps(ctx), guidance=p.guidance)
        items = []
        for i in range(shown_n):
            items.append({**item(ctx, images[i], f"sample {i + 1}, close up", f"hybrid sample {i + 1} seen large"),
                          "width": p.display_px["large"]})
            items.append({**item(ctx, images[i], f"sample {i + 1}, from afar", f"hybrid sample {i + 1} seen small"),
                          "width": p.display_px["small"]})
        measured = f" {n} samples, none picked."
        if judge:
            read, digit_of = judge
            want_low, want_high = digit_of(low), digit_of(high)
            full = read(images)
            small = read(den.from_unit(seen_small(den.to_unit(images), small_px)))
            low_ok, high_ok, both = two_readings(small, want_low, full, want_high)
            judged.append({"low": want_low, "high": want_high, "n": n, "small_reads_low": low_ok,
                           "full_reads_high": high_ok, "full_reads_low": sum(d == want_low for d in full),
                           "both": both})
            measured = (f" The independent MNIST classifier reads {low_ok} of {n} samples as {want_low} "
                        f"when shrunk to {small_px} × {small_px} pixels, {high_ok} of {n} as {want_high} at "
                        f"full size, and {both} of {n} as both; the first {shown_n} are shown, none picked.")
        ctx.save_gallery(f"a1_9_hybrid{k}", [{"caption": f"low frequencies: “{low}”; high frequencies: “{high}”",
                                              "items": items}],
                         caption=f"Hybrid image {k}: the noise estimate is the Gaussian low-pass (kernel {kernel}, "
                                 f"σ = {sigma:g}) of the CFG estimate for “{low}” plus the high-pass of the one for "
                                 f"“{high}” (γ = {p.guidance}); {backend_label(ctx)}." + measured,
                         alt=f"Hybrid images shown large (meant to read as {high}) and small (meant to read as {low}).",
                         meta=provenance(ctx, prompts=[low, high], kernel=kernel, sigma=sigma, guidance=p.guidance,
                                         display="hybrid"))
    if judged:
        ctx.save_json("judged", judged)
