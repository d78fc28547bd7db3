"""Part B 1.2: what the denoiser is up against, MNIST digits noised at several sigma."""
from builder.section import Section
from diffusion import data
from diffusion.one_step import add_noise
from diffusion.rng import randperm

SECTION = Section(
    id="b1_2_noising",
    title="Part B 1.2: the noising process",
    params={"sigmas": [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0], "num_digits": 5},
    profiles={"smoke": {"num_digits": 2}},
    inputs=("mnist",),
)


def run(ctx):
    p = ctx.params
    x, labels = data.as_tensor(data.load("test"))
    pick = randperm(len(x), ctx.generator("pick"), device="cpu")[: p.num_digits]
    noise = ctx.generator("noise")
    rows = []
    for i in pick.tolist():
        noisy = [add_noise(x[i], s, noise) for s in p.sigmas]
        rows.append({"caption": f"test digit #{i} (a {labels[i].item()})",
                     "items": [{"image": img.clamp(0, 1), "label": f"σ = {s}"} for img, s in zip(noisy, p.sigmas)]})
    ctx.save_gallery(
        "b1_2_noising", rows,
        caption=f"MNIST test digits under z = x + σε for σ in {p.sigmas}; pixel values clipped to [0, 1] for display.",
        alt="Rows of handwritten digits, each getting grainier from left to right as the noise level σ grows.",
        meta={"sigmas": p.sigmas, "indices": pick.tolist()},
    )
