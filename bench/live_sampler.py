"""The live sampler in headless Chromium: milliseconds per step and seconds per run at every step.

Serves a built site (default: site/) on 127.0.0.1, opens Part B, and presses the sampler's button the
way a reader does: one digit, then all ten, each over all T steps (and a strided run), with
onnxruntime-web on WebAssembly and one thread, in the page's worker. Each run is timed by the
worker itself (the time from the first step to the last, as the page shows it); the first press also
loads the runtime and the model, which is timed apart. The issue's goal: one digit in at most 3 s and
all ten in at most 30 s at 300 steps.

    python -m bench.live_sampler --json bench/results/live_sampler.json
"""
from __future__ import annotations

import argparse
import functools
import http.server
import threading
import time
from pathlib import Path

from bench.common import describe_machine, save_result

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
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


def measure(site: Path, repeats: int) -> dict:
    import json

    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    settings = json.loads((site / "figures" / "b3_live-settings.json").read_text())
    T = settings["T"]
    runs = [("one digit", "3", T), ("all ten digits", "all", T), ("one digit, strided", "3", T // 10),
            ("all ten digits, strided", "all", T // 10)]
    out = {"T": T, "model": settings["model"], "repeats": repeats, "runs": [],
           "gflop_per_digit_step": round(gflop_per_digit_step(settings["model"]["num_hiddens"],
                                                              settings["num_classes"], settings["shape"]), 4)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/part-b.html", wait_until="load")
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
        browser.close()
    httpd.shutdown()
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
    return save_result(args.json, result)


if __name__ == "__main__":
    main()
