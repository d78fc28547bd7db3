"""Part B 2.5, live: the final class-conditioned UNet exported to ONNX with the settings the page's
sampler reads (the noise schedule, the model's shape, the controls' ranges), so that the reader's
browser runs Algorithm 4 itself (templates/static/live-sampler-worker.js, diffusion/live.py)."""
import json

from builder.section import Section
from diffusion.ddpm import linear_schedule
from diffusion.onnx_export import INPUTS, OPSET, OUTPUTS, export_guided_pair
from generators._partb import GPU_SHARE

SECTION = Section(
    id="b3_live_sampler",
    title="Part B 2.5: the class-conditioned DDPM in the reader's browser",
    # The controls' starting values and ranges; the page offers every number of steps that divides T
    # from min_steps up.
    params={"guidance": 5.0, "guidance_max": 10.0, "min_steps": 10, "seed": 0},
    depends=("b3_train_class",),
    needs=GPU_SHARE,
)


def run(ctx):
    p = ctx.params
    up = ctx.upstream("b3_train_class")
    tp = up.params
    model = up.model("final")
    shape = [1, 28, 28]
    onnx = export_guided_pair(model, tuple(shape))
    schedule = linear_schedule(tp["T"], tp["beta1"], tp["beta2"])
    T = schedule.T
    settings = {
        "format": 1,
        "T": T, "betas": schedule.betas.tolist(), "alphas": schedule.alphas.tolist(),
        "alpha_bars": schedule.alpha_bars.tolist(),
        "num_classes": tp["num_classes"], "shape": shape,
        "onnx": {"inputs": list(INPUTS), "outputs": list(OUTPUTS), "opset": OPSET},
        "controls": {"guidance": p.guidance, "guidance_max": p.guidance_max, "seed": p.seed,
                     "steps": [s for s in range(p.min_steps, T + 1) if T % s == 0]},
        # diffusion/live.py: a digit's noise images are draws 0..T of its own counter range.
        "noise": {"draws_per_digit": T + 1},
        "model": {"num_hiddens": tp["num_hiddens"], "epochs": tp["epochs"], "p_uncond": tp["p_uncond"],
                  "parameters": sum(t.numel() for t in model.parameters())},
    }
    data = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    ctx.save_files("b3_live", "live", [(onnx, "onnx", "model"), (data, "json", "settings")], caption=(
        f"Sample the class-conditioned UNet yourself: the model after epoch {tp['epochs']} of {tp['epochs']} "
        f"(D = {tp['num_hiddens']}, {settings['model']['parameters']:,} parameters), exported to ONNX, runs "
        f"Algorithm 4 in your browser with the schedule the model was trained with (T = {T})."),
        alt="An interactive sampler: pick a digit, a guidance scale, a number of steps and a seed, and watch "
            "x_t and the predicted clean image form step by step.",
        meta={"display": "sampler", "epoch": tp["epochs"], "num_classes": tp["num_classes"], "shape": shape,
              "controls": settings["controls"]})
