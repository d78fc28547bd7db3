"""Part B 2.3, measured: how far the time-conditioned DDPM's samples are from real digits at each
snapshot epoch, seen through the project's independent MNIST classifier.

For each snapshot the section draws ``num_samples`` fresh samples (Algorithm 2, all T steps) and
reports the classifier's class histogram and a Fréchet distance between the classifier's
penultimate-layer features of the samples and of the MNIST test set. The same distance for
``num_samples`` real training digits is the floor: what a perfect model would score with this
many samples, since the estimate is biased upwards for small sets.
"""
import numpy as np
import torch

from builder.section import Section
from diffusion import data
from diffusion.classifier import embed
from diffusion.ddpm import sample_time
from diffusion.metrics import class_histogram, frechet_distance, frechet_spread, gaussian_stats
from diffusion.rng import randperm
from generators._partb import GPU_SHARE, autocast_dtype, trained_ddpm

SECTION = Section(
    id="b2_time_metrics",
    title="Part B 2.3: sample quality of the time-conditioned DDPM per epoch",
    params={"num_samples": 1000, "batch_size": 500},
    # 1,000 samples x 300 steps x 5 snapshots take 15 minutes on a 2-core CPU; 200 take three, which keeps
    # Part B near its 20-minute budget and still exceeds the 128 feature dimensions.
    profiles={"cpu": {"num_samples": 200, "batch_size": 200}, "smoke": {"num_samples": 20, "batch_size": 20}},
    depends=("b2_train_time", "b0_classifier"),
    inputs=("mnist",),
    needs=GPU_SHARE,
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    up, tp, _history, schedule = trained_ddpm(ctx, "b2_train_time")
    judge = ctx.upstream("b0_classifier").model("final").cpu()
    judge_accuracy = ctx.upstream("b0_classifier").json("test_accuracy")

    x_test, _ = data.as_tensor(data.load("test"))
    test_stats = gaussian_stats(embed(judge, x_test)[1])
    x_train, _ = data.as_tensor(data.load("train"))
    real = x_train[randperm(len(x_train), ctx.generator("real"), device="cpu")[: p.num_samples]]
    real_labels, real_features = embed(judge, real)
    floor = frechet_distance(gaussian_stats(real_features), test_stats)
    rng = np.random.default_rng(ctx.generator("bootstrap").initial_seed())
    floor_spread = frechet_spread(real_features, test_stats, rng)

    epochs, fids, spreads, histograms = [], [], [], []
    for epoch in up.json("history")["snapshot_epochs"]:
        model = up.model(f"epoch{epoch}")
        gen = ctx.generator("samples")  # the same noise for every snapshot: only the weights differ
        samples = torch.cat([
            sample_time(model, min(p.batch_size, p.num_samples - start), schedule, gen, keep_every=0,
                        autocast_dtype=autocast_dtype(ctx)).images.float().cpu()
            for start in range(0, p.num_samples, p.batch_size)])
        labels, features = embed(judge, samples)
        epochs.append(epoch)
        fids.append(frechet_distance(gaussian_stats(features), test_stats))
        spreads.append(frechet_spread(features, test_stats, rng))
        histograms.append(class_histogram(labels))

    real_histogram = class_histogram(real_labels)
    method = (f"{p.num_samples} samples per snapshot, {tp['T']} steps each; features: the 128 penultimate "
              f"activations of the project's MNIST classifier (test accuracy {judge_accuracy:.2%}), compared "
              f"with the 10,000 MNIST test digits")
    _plot(ctx, epochs, fids, spreads, histograms, floor, real_histogram, p.num_samples, method)
    rows = [[e, f"{f:.0f} ± {sd:.0f}"] + [f"{h:.0%}" for h in hist]
            for e, f, sd, hist in zip(epochs, fids, spreads, histograms)]
    rows.append([f"real digits ({p.num_samples})", f"{floor:.0f} ± {floor_spread:.0f}"]
                + [f"{h:.0%}" for h in real_histogram])
    ctx.save_table("b2_quality", ["epoch", "Fréchet distance"] + [f"{d}" for d in range(10)], rows,
                   caption=f"Fréchet distance to the test set (lower is better; ± one standard deviation over "
                           f"50 bootstrap resamples of the samples) and the share of samples the classifier reads "
                           f"as each digit 0-9, per snapshot epoch; {method}. The last row scores "
                           f"{p.num_samples} real training digits the same way: the floor for this sample size.",
                   meta={"num_samples": p.num_samples})
    ctx.save_json("quality", {"epochs": epochs, "frechet": [round(f, 3) for f in fids],
                              "frechet_bootstrap_sd": [round(sd, 3) for sd in spreads], "floor": round(floor, 3),
                              "histograms": [[round(h, 4) for h in hist] for hist in histograms],
                              "num_samples": p.num_samples})


def _plot(ctx, epochs, fids, spreads, histograms, floor, real_histogram, n, method):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    left.errorbar(epochs, fids, yerr=spreads, marker="o", capsize=3, color="#0b5cad", label="DDPM samples (± 1 sd)")
    left.axhline(floor, color="#777777", linestyle="--", linewidth=1, label=f"{n} real digits")
    left.set_yscale("log")
    left.set_xticks(epochs)
    left.set_xlabel("epoch")
    left.set_ylabel("Fréchet distance (log scale)")
    left.set_title("Distance to the test set")
    left.legend(frameon=False)
    left.grid(True, alpha=0.3)

    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(epochs)))
    digits = np.arange(10)
    for epoch, hist, colour in zip(epochs, histograms, colours):
        right.plot(digits, hist, marker=".", color=colour, label=f"epoch {epoch}")
    right.plot(digits, real_histogram, color="#777777", linestyle="--", linewidth=1, label="real digits")
    right.set_xticks(digits)
    right.set_xlabel("digit the classifier reads")
    right.set_ylabel("share of samples")
    right.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    right.set_title("Class histogram")
    right.legend(frameon=False, fontsize="small", ncol=2)
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    ctx.save_plot("b2_quality_plot", fig,
                  caption=f"Sample quality of the time-conditioned DDPM against its training epochs. Left: Fréchet "
                          f"distance to the test set, with its bootstrap spread (dashed: real digits, the floor for "
                          f"{n} samples). Right: which "
                          f"digits the samples are read as (dashed: real digits); {method}.",
                  alt=f"The Fréchet distance falls from {fids[0]:.0f} after epoch {epochs[0]} to {fids[-1]:.0f} after "
                      f"epoch {epochs[-1]} (real digits: {floor:.0f}); the class histograms of the snapshots.")
