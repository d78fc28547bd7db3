"""What a section's ``run(ctx)`` is handed: its parameters, seed, device, resources, the ``save_*`` helpers.

Everything a section saves goes into a private staging folder first; the engine moves it into
the content-addressed store only when ``run`` returns, so a failing or interrupted section
leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import BuildError, faults, figures
from .cache import Entry, Store

# Bump when the shape of the records that save_* writes changes, so old cache entries miss.
RECORD_FORMAT = 1

_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, stable across runs and machines."""
    text = ":".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


class Params:
    """A section's parameters as attributes, remembering which were read.

    ``check_all_read`` (called by the engine when ``run`` returns) fails the section if a declared
    parameter was never read: it would sit in the cache key and on the page while changing nothing.
    """

    def __init__(self, section_id: str, values: dict[str, Any]):
        object.__setattr__(self, "_section", section_id)
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_read", set())

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name not in values:
            raise AttributeError(f"section {self._section!r} has no parameter {name!r}")
        self._read.add(name)
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"parameters are read-only; {name!r} is set in the Section's params or profiles")

    def check_all_read(self) -> None:
        unread = sorted(set(self._values) - self._read)
        if unread:
            raise BuildError(f"section {self._section!r} declares the parameter(s) {', '.join(unread)} but never "
                             f"reads them, so they would change its cache key and nothing else; remove them "
                             f"from its Section (or from the profile that sets them), or use them.")


@dataclass
class Context:
    section_id: str
    params: Params
    profile: str
    seed: int
    device: str
    dtype: str | None
    store: Store
    staging: Path
    scratch: Path
    upstream_entries: dict[str, Entry]
    resources: dict[str, Any] = field(default_factory=dict)  # name -> engine.Resource, those the section uses
    progress_factory: Callable[..., Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    _loaded: dict[str, Any] = field(default_factory=dict)

    # -- randomness ------------------------------------------------------------------------
    def generator(self, name: str = "default", device: str | None = None):
        """A torch.Generator seeded from this section's seed and ``name``, on the build's device
        unless ``device`` says otherwise.

        Each stream is independent of every other section, so skipping or reordering sections
        never changes this one's random numbers. Draw from it through ``diffusion.rng``, which
        draws on the generator's own device, so the stream serves tensors on any device.
        """
        import torch

        return torch.Generator(device=device or self.device).manual_seed(derive_seed(self.seed, name))

    # -- shared resources ------------------------------------------------------------------
    def resource(self, name: str):
        """The resource ``name`` (declared in the Section's ``uses``), loaded on first use."""
        if name not in self.resources:
            raise BuildError(f"section {self.section_id!r} asks for the resource {name!r}, which this build does "
                             f"not provide or its Section does not declare in uses=.")
        if name not in self._loaded:
            self._loaded[name] = self.resources[name].load(self)
        return self._loaded[name]

    def resource_identity(self, name: str) -> dict[str, Any] | None:
        """The identity of a used resource, as in the cache key (None when the build has none)."""
        res = self.resources.get(name)
        return res.identity if res else None

    # -- progress --------------------------------------------------------------------------
    def progress(self, total: int, desc: str):
        if self.progress_factory is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, leave=False, disable=True)
        else:
            bar = self.progress_factory(total=total, desc=f"{self.section_id}: {desc}")
        # Only tests arm fault injection; an ordinary build keeps the bar untouched.
        return _CrashPoints(bar, f"step:{self.section_id}:") if faults.armed() else bar

    # -- saving ----------------------------------------------------------------------------
    def _check_id(self, fig_id: str) -> None:
        if not _ID.match(fig_id):
            raise BuildError(f"section {self.section_id!r} saved a figure with the id {fig_id!r}; ids use "
                             f"lower-case letters, digits, '_' and '-' only.")
        if any(o["id"] == fig_id for o in self.outputs):
            raise BuildError(f"section {self.section_id!r} saved the id {fig_id!r} twice.")

    def _file(self, data: bytes, ext: str, role: str) -> dict[str, str]:
        sha = hashlib.sha256(data).hexdigest()
        (self.staging / f"{sha}").write_bytes(data)
        return {"sha": sha, "ext": ext, "role": role}

    def _figure(self, fig_id: str, kind: str, caption: str, alt: str, files, meta, **extra) -> dict:
        self._check_id(fig_id)
        if not caption or not caption.strip():
            raise BuildError(f"figure {fig_id!r} of section {self.section_id!r} has no caption.")
        record = {"id": fig_id, "kind": kind, "caption": caption.strip(), "alt": (alt or caption).strip(),
                  "files": files, "meta": meta or {}, "publish": True, **extra}
        self.outputs.append(record)
        return record

    def save_files(self, fig_id: str, kind: str, files: Sequence[tuple[bytes, str, str]], caption: str, alt: str = "",
                   meta: dict | None = None):
        """A figure made of files that a page's script reads, published as they are (e.g. a model and its
        settings for a sampler in the reader's browser): ``files`` holds (bytes, extension, role) for each;
        ``kind`` names the template that shows them."""
        stored = [self._file(data, ext, role) for data, ext, role in files]
        return self._figure(fig_id, kind, caption, alt, stored, meta)

    def save_image(self, fig_id: str, image: Any, caption: str, alt: str = "", meta: dict | None = None):
        """One image (tensor or array in [0, 1])."""
        return self._figure(fig_id, "image", caption, alt, [self._file(figures.png_bytes(image), "png", "image")], meta)

    def save_grid(self, fig_id: str, images: Sequence[Any], ncol: int, caption: str, alt: str = "",
                  meta: dict | None = None, pad: int = 2):
        """Equally sized images tiled into one PNG, e.g. a 4 x 10 grid of samples."""
        data = figures.png_bytes(figures.grid_array(list(images), ncol, pad))
        return self._figure(fig_id, "grid", caption, alt, [self._file(data, "png", "image")], meta)

    def save_gallery(self, fig_id: str, rows: Sequence[dict], caption: str, alt: str = "",
                     meta: dict | None = None):
        """Rows of separately labelled images with a caption under each row.

        ``rows`` is a list of ``{"caption": str, "items": [{"image": img, "label": str}, ...]}``.
        """
        files, out_rows = [], []
        for r, row in enumerate(rows):
            items = []
            for c, item in enumerate(row["items"]):
                files.append(self._file(figures.png_bytes(item["image"]), "png", f"r{r}c{c}"))
                items.append({"file": len(files) - 1, "label": item.get("label", ""),
                              "alt": item.get("alt") or item.get("label", ""),
                              **({"width": int(item["width"])} if item.get("width") else {})})
            out_rows.append({"caption": row.get("caption", ""), "items": items})
        return self._figure(fig_id, "gallery", caption, alt, files, meta, rows=out_rows)

    def save_gif(self, fig_id: str, frames: Sequence[Any], caption: str, alt: str = "", fps: float = 10,
                 meta: dict | None = None, frame_labels: Sequence[str] | None = None):
        """An animation plus a strip of its frames (for pause/play and a frame slider)."""
        frames = list(frames)
        files = [self._file(figures.gif_bytes(frames, fps, hold_last=max(1, int(fps))), "gif", "animation"),
                 self._file(figures.strip_bytes(frames), "png", "strip")]
        first = figures.to_numpy_image(frames[0])
        return self._figure(fig_id, "gif", caption, alt, files, meta, frames=len(frames), fps=fps,
                            frame_size=[int(first.shape[1]), int(first.shape[0])],
                            frame_labels=list(frame_labels or []))

    def save_plot(self, fig_id: str, fig, caption: str, alt: str = "", meta: dict | None = None):
        """A matplotlib figure, closed after saving."""
        import matplotlib.pyplot as plt

        data = figures.plot_bytes(fig)
        plt.close(fig)
        return self._figure(fig_id, "plot", caption, alt, [self._file(data, "png", "image")], meta)

    def save_table(self, fig_id: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str,
                   meta: dict | None = None):
        """A small table rendered as HTML (e.g. hyperparameters from the configuration used)."""
        table = {"columns": [str(c) for c in columns], "rows": [[_cell(v) for v in row] for row in rows]}
        return self._figure(fig_id, "table", caption, caption, [], meta, table=table)

    def save_model(self, name: str, model: Any, state_dict: Any = None, meta: dict[str, Any] | None = None):
        """A torch model for downstream sections, saved so that it describes itself (not published).

        The file holds the import path of the model's factory (its class, or a function named by
        ``model.factory``), the ``config`` it was built with (``model.config``, the factory's keyword
        arguments), the weights (``state_dict``, default the model's own) and ``meta`` (e.g. the noise
        schedule it was trained on), the way nanoGPT saves ``model_args`` and diffusers a model's
        config; so ``ctx.upstream(section).model(name)`` needs no arguments.
        """
        import io

        import torch

        config = getattr(model, "config", None)
        factory = getattr(model, "factory", f"{type(model).__module__}.{type(model).__qualname__}")
        if not isinstance(config, dict):
            raise BuildError(f"section {self.section_id!r} saves the model {name!r} ({factory}), which has no "
                             f"`config` dict of the arguments it was built with; set model.config.")
        buf = io.BytesIO()
        torch.save({"factory": factory, "config": config, "meta": meta or {},
                    "state_dict": state_dict if state_dict is not None else model.state_dict()}, buf)
        self._check_id(f"model-{name}")
        self.outputs.append({"id": f"model-{name}", "kind": "model", "publish": False,
                             "files": [self._file(buf.getvalue(), "pt", "model")]})

    def save_json(self, name: str, value: Any):
        """Plain data (metrics, histories) for downstream sections; not published."""
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        self._check_id(f"data-{name}")
        self.outputs.append({"id": f"data-{name}", "kind": "data", "publish": False,
                             "files": [self._file(data, "json", "data")]})

    # -- reading upstream artifacts --------------------------------------------------------
    def upstream(self, section_id: str) -> "Upstream":
        if section_id not in self.upstream_entries:
            raise BuildError(f"section {self.section_id!r} reads artifacts of {section_id!r} but does not "
                             f"declare it in depends=.")
        return Upstream(section_id, self.upstream_entries[section_id], self.store, self.device)


@dataclass
class Upstream:
    section_id: str
    entry: Entry
    store: Store
    device: str
    _models: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # model files read so far

    @property
    def params(self) -> dict[str, Any]:
        """The parameters the upstream section actually ran with (resolved for its profile)."""
        return self.entry.record["components"]["params"]

    @property
    def profile(self) -> str:
        return self.entry.record["components"]["profile"]

    def _output(self, out_id: str) -> dict[str, Any]:
        for out in self.entry.outputs:
            if out["id"] == out_id:
                return out
        known = ", ".join(o["id"] for o in self.entry.outputs)
        raise BuildError(f"section {self.section_id!r} has no output {out_id!r}; it has: {known}.")

    def path(self, out_id: str) -> Path:
        return self.store.object_path(self._output(out_id)["files"][0]["sha"])

    def _model_file(self, name: str) -> dict[str, Any]:
        """The saved model file, read once (``model`` and ``model_meta`` both need it)."""
        if name not in self._models:
            import torch

            self._models[name] = torch.load(self.path(f"model-{name}"), map_location="cpu", weights_only=True)
        return self._models[name]

    def model(self, name: str):
        """The model ``name`` that the upstream section saved, rebuilt from its own config, on this
        section's device and in eval mode."""
        import importlib

        saved = self._model_file(name)
        module, _, attr = saved["factory"].rpartition(".")
        model = getattr(importlib.import_module(module), attr)(**saved["config"])
        model.load_state_dict(saved["state_dict"])
        return model.to(self.device).eval()

    def model_meta(self, name: str) -> dict[str, Any]:
        """What the upstream section saved alongside the model's weights (e.g. its noise schedule)."""
        return self._model_file(name)["meta"]

    def model_sha(self, name: str) -> str:
        return self._output(f"model-{name}")["files"][0]["sha"]

    def json(self, name: str):
        return json.loads(self.path(f"data-{name}").read_text(encoding="utf-8"))

    def figure(self, fig_id: str) -> dict[str, Any]:
        return self._output(fig_id)


class _CrashPoints:
    """A progress bar whose n-th step is the fault-injection point ``step:<section>:<n>``.

    Training reports every optimizer step, so a test can kill a build mid-training without
    touching the training code.
    """

    def __init__(self, bar, prefix: str):
        self._bar, self._prefix, self._steps = bar, prefix, 0

    def update(self, n: int = 1):
        result = self._bar.update(n)
        self._steps += n
        faults.crash_point(f"{self._prefix}{self._steps}")
        return result

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def __getattr__(self, name: str):
        return getattr(self._bar, name)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)
