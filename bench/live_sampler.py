"""The live sampler in headless Chromium: milliseconds per step and seconds per run at every step.

Serves a built site (default: site/) on 127.0.0.1, opens Part B, and presses the sampler's button the
way a reader does: one digit, then all ten, each over all T steps (and a strided run), with
onnxruntime-web on WebAssembly and one thread, in the page's worker. Each run is timed by the
worker itself (the time from the first step to the last, as the page shows it); the first press also
loads the runtime and the model, which is timed apart. The issue's goal: one digit in at most 3 s and
all ten in at most 30 s at 300 steps.

It also times cheaper graphs that one could publish instead (``variants``): the published graph with
GELU's tanh approximation, and with 8-bit weights and activations (onnxruntime's static QDQ
quantisation, calibrated on the sampler's own x_t). Each is timed alone (one evaluation of the guided
pair for one digit, the step's network work) in one page, in turns, the fastest of several rounds, and
its largest difference from the published graph's noise estimates is measured in Python on other x_t
of the same sampler. A graph whose error passes TOLERANCE, the tolerance that ties the published file
to the torch model (tests/test_live.py), would not draw the Python sampler's digits.

    python -m bench.live_sampler --json bench/results/live_sampler.json
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import tempfile
import threading
import time
from pathlib import Path

from bench.common import describe_machine, save_result

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TOLERANCE = 1e-4  # the largest |difference| in eps allowed between the published graph and torch
# Sets the controls as a reader would and presses the button; resolves with the run's "live-sampler-done"
# detail (the final images, x_T, the timing and the backend). tests/test_browser.py drives it too.
RUN = """(choice) => new Promise((resolve) => {
  const box = document.querySelector(".live-sampler"), form = box.querySelector(".live-controls");
  form.elements.digit.value = choice.digit;
  form.elements.steps.value = String(choice.steps);
  form.elements.seed.value = String(choice.seed ?? 0);
  if (choice.guidance !== undefined) form.elements.guidance.value = String(choice.guidance);
  if (choice.backend !== undefined) form.elements.backend.value = choice.backend;
  box.addEventListener("live-sampler-done", (e) => resolve(e.detail), {once: true});
  box.querySelector(".live-run").click();
})"""


def gflop_per_digit_step(num_hiddens: int, num_classes: int, shape: list[int]) -> float:
    """The floating-point work of one digit's step, counted by torch on the exported graph's torch twin."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion.onnx_export import GuidedPair
    from diffusion.unet import ClassConditionalUNet

    pair = GuidedPair(ClassConditionalUNet(shape[0], num_classes, num_hiddens).eval())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        pair(torch.zeros(1, *shape), torch.zeros(1, num_classes), torch.zeros(1))
    return counter.get_total_flops() / 1e9


ROUNDS = 15  # of timing the cheaper graphs in turns; the fastest round of each counts
# Times each model file alone: one digit's guided pair per call, the files in turns, the fastest round kept.
# The runtime is the WebAssembly build that the Part B page names (its bundle and binary, site-relative).
VARIANTS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>variants</title></head><body>
<script type="module">
window.timeVariants = async ({bundle, binary, files, shape, classes, rounds, calls}) => {
  const ort = await import(new URL(bundle, location.href).href);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = {wasm: new URL(binary, location.href).href};
  const feeds = {
    x: new ort.Tensor("float32", Float32Array.from({length: shape.reduce((a, b) => a * b)}, (_, i) => Math.sin(i)), [1, ...shape]),
    c: new ort.Tensor("float32", Float32Array.from({length: classes}, (_, i) => i === 3 ? 1 : 0), [1, classes]),
    t: new ort.Tensor("float32", new Float32Array([0.5]), [1]),
  };
  const sessions = [];
  for (const f of files) {
    const s = await ort.InferenceSession.create(f, {executionProviders: ["wasm"], graphOptimizationLevel: "all"});
    for (let i = 0; i < 5; i++) await s.run(feeds);
    sessions.push(s);
  }
  const best = files.map(() => Infinity);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < sessions.length; k++) {
      const started = performance.now();
      for (let i = 0; i < calls; i++) await sessions[k].run(feeds);
      best[k] = Math.min(best[k], (performance.now() - started) / calls);
    }
  }
  return best;
};
</script></body></html>
"""


@contextlib.contextmanager
def served(folder: Path):
    """``folder`` over HTTP on 127.0.0.1; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def sampler_inputs(session, settings: dict, seed: int, steps: int) -> list[dict]:
    """The (x_t, c, t/T) that the live sampler feeds the network (an onnxruntime session of the published
    graph): all ten digits over ``steps`` strided steps."""
    import numpy as np
    import torch

    from diffusion import live
    from diffusion.ddpm import Schedule

    schedule = Schedule(torch.tensor(settings["betas"]), torch.tensor(settings["alphas"]),
                        torch.tensor(settings["alpha_bars"]))
    T, digits, pair = settings["T"], list(range(settings["num_classes"])), live.onnx_pair(session)
    seen = []

    def record(x, c, t):
        seen.append({"x": x.numpy(), "c": c.numpy(), "t": t.numpy().astype(np.float32)})
        return pair(x, c, t)

    live.sample(record, digits, schedule, settings["controls"]["guidance"], live.strided_timesteps(T, steps),
                live.portable_noise(seed, digits, T, tuple(settings["shape"])), settings["num_classes"])
    return seen


def variants(model: bytes, settings: dict, folder: Path) -> list[dict]:
    """The published graph and the cheaper ones, written to ``folder``, each with its largest difference
    from the published graph's (eps_c, eps_u) on x_t that the calibration did not see."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reference = onnxruntime.InferenceSession(model)
    published, tanh_gelu, int8 = folder / "published.onnx", folder / "gelu-tanh.onnx", folder / "int8.onnx"
    published.write_bytes(model)
    tanh = onnx.load_from_string(model)
    for node in tanh.graph.node:
        if node.op_type == "Gelu":
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("approximate", "tanh"))
    onnx.save(tanh, tanh_gelu)

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(sampler_inputs(reference, settings, seed=1, steps=30))

        def get_next(self):
            return next(self.batches, None)

    quant_pre_process(str(published), str(folder / "prepared.onnx"))
    quantize_static(str(folder / "prepared.onnx"), str(int8), Calibration(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    held_out = sampler_inputs(reference, settings, seed=2, steps=10)
    out = []
    for label, path in (("published (exact GELU, float32)", published), ("GELU's tanh approximation", tanh_gelu),
                        ("8-bit weights and activations (QDQ)", int8)):
        session = onnxruntime.InferenceSession(str(path))
        error = max(float(np.abs(a - b).max()) for feed in held_out
                    for a, b in zip(session.run(None, feed), reference.run(None, feed)))
        out.append({"variant": label, "file": path.name, "max_abs_error": error, "within_tolerance": error <= TOLERANCE})
    return out


def time_variants(browser, site: Path, runtime: dict, found: list[dict], shape: list[int], classes: int,
                  folder: Path) -> None:
    """Adds ``ms_per_call`` to each variant: one digit's guided pair on one WebAssembly thread.
    ``runtime``: the site-relative bundle and binary of the build the page runs on WebAssembly."""
    (folder / "static").symlink_to(site / "static", target_is_directory=True)
    (folder / "index.html").write_text(VARIANTS_PAGE)
    with served(folder) as url:
        page = browser.new_page()
        page.goto(f"{url}/index.html", wait_until="load")
        best = page.evaluate("(a) => window.timeVariants(a)", {**runtime, "files": [v["file"] for v in found],
                                                               "shape": shape, "classes": classes,
                                                               "rounds": ROUNDS, "calls": 4})
        page.close()
    for v, ms in zip(found, best):
        v["ms_per_call"] = round(ms, 2)


def measure(site: Path, repeats: int) -> dict:
    import json

    from playwright.sync_api import sync_playwright

    settings = json.loads((site / "figures" / "b3_live-settings.json").read_text())
    model = (site / "figures" / "b3_live-model.onnx").read_bytes()
    T = settings["T"]
    runs = [("one digit", "3", T), ("all ten digits", "all", T), ("one digit, strided", "3", T // 10),
            ("all ten digits, strided", "all", T // 10)]
    out = {"T": T, "model": settings["model"], "repeats": repeats, "runs": [], "tolerance": TOLERANCE,
           "variant_rounds": ROUNDS,
           "gflop_per_digit_step": round(gflop_per_digit_step(settings["model"]["num_hiddens"],
                                                              settings["num_classes"], settings["shape"]), 4)}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p, served(site) as url:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"{url}/part-b.html", wait_until="load")
        out["chromium"] = browser.version
        started = time.perf_counter()
        first = page.evaluate(RUN, {"digit": "3", "steps": T // 30})  # loads the runtime and the model
        out["first_press_seconds"] = round(time.perf_counter() - started - first["totalMs"] / 1000, 2)
        out["backend"] = first["backend"]
        for label, digit, steps in runs:
            times = [page.evaluate(RUN, {"digit": digit, "steps": steps}) for _ in range(repeats)]
            best = min(times, key=lambda r: r["totalMs"])
            out["runs"].append({"run": label, "digits": 10 if digit == "all" else 1, "steps": steps,
                                "ms_per_step": round(best["msPerStep"], 2),
                                "seconds": round(best["totalMs"] / 1000, 2)})
        runtime = page.eval_on_selector(".live-controls option[value=wasm]",
                                        "o => ({bundle: o.dataset.bundle, binary: o.dataset.binary})")
        page.close()
        out["variants"] = variants(model, settings, Path(tmp))
        time_variants(browser, site, runtime, out["variants"], settings["shape"], settings["num_classes"], Path(tmp))
        browser.close()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, default=ROOT / "site", help="a built site (default: site/)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each kind; the fastest is kept")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    result = {"machine": describe_machine(), **measure(args.site.resolve(), args.repeats)}
    for r in result["runs"]:
        print(f"{r['run']:26s} {r['steps']:4d} steps  {r['ms_per_step']:7.2f} ms/step  {r['seconds']:6.2f} s")
    for v in result["variants"]:
        print(f"{v['variant']:40s} {v['ms_per_call']:7.2f} ms per call  largest |error| {v['max_abs_error']:.2g}")
    return save_result(args.json, result)


if __name__ == "__main__":
    main()
