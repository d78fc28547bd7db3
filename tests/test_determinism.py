"""Two cold smoke builds in fresh cache folders write the same site, byte for byte, and cache
the same outputs under the same keys."""
import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import build

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)


def site_files(site: Path) -> dict[str, bytes]:
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}


def differences(a: Path, b: Path) -> list[str]:
    """Files that exist in only one site, or whose bytes differ, with the first differing line."""
    fa, fb = site_files(a), site_files(b)
    out = [f"{name}: only in {a if name in fa else b}" for name in sorted(set(fa) ^ set(fb))]
    for name in sorted(set(fa) & set(fb)):
        x, y = fa[name], fb[name]
        if x != y:
            first = next((i for i, (p, q) in enumerate(zip(x.splitlines(), y.splitlines())) if p != q), None)
            line = x.splitlines()[first][:200] if first is not None else b"(one is a prefix of the other)"
            out.append(f"{name}: differs at line {None if first is None else first + 1}: {line!r}")
    return out


def assert_same_site(a: Path, b: Path):
    diff = differences(a, b)
    assert not diff, "the two sites differ:\n" + "\n".join(diff[:20])


def records(cache: Path) -> dict[str, dict]:
    """The cache record of each section (the one the site was built from: a cold build has one)."""
    out = {}
    for path in sorted((cache / "entries").glob("*/*.json")):
        record = json.loads(path.read_text())
        assert record["section"] not in out, f"{record['section']} has two records in {cache}"
        out[record["section"]] = record
    return out


def record(cache: Path, section: str) -> dict:
    found = [json.loads(p.read_text()) for p in (cache / "entries" / section).glob("*.json")]
    assert len(found) == 1, f"{section} has {len(found)} records in {cache}"
    return found[0]


def assert_store_intact(cache: Path):
    """Every object is named by its content's hash, and every record's objects exist."""
    for path in (cache / "objects").rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupted object {path}"
    for path in (cache / "entries").glob("*/*.json"):
        for out in json.loads(path.read_text())["outputs"]:
            for f in out["files"]:
                assert (cache / "objects" / f["sha"][:2] / f["sha"]).is_file(), f"{path} names a missing object"


@pytest.fixture(scope="module")
def second_cold_build(tmp_path_factory, smoke_build):
    base = tmp_path_factory.mktemp("smoke-again")
    build("--profile", "smoke", cache=base / "cache", site=base / "site")
    return {"cache": base / "cache", "site": base / "site"}


def test_two_cold_builds_write_identical_figures(smoke_build, second_cold_build):
    figures = lambda site: {n: d for n, d in site_files(site).items() if not n.endswith((".html", ".json"))}
    a, b = figures(smoke_build["site"]), figures(second_cold_build["site"])
    assert a.keys() == b.keys() and len(a) > 50
    assert [n for n in a if a[n] != b[n]] == []


def test_two_cold_builds_cache_the_same_outputs_under_the_same_keys(smoke_build, second_cold_build):
    """Every checkpoint, history, figure and data file is the same, so every key downstream is too."""
    a, b = records(smoke_build["cache"]), records(second_cold_build["cache"])
    assert a.keys() == b.keys()
    for sid in a:
        assert a[sid]["key"] == b[sid]["key"], f"{sid}: {a[sid]['components']} != {b[sid]['components']}"
        files = lambda r: {o["id"]: [f["sha"] for f in o["files"]] for o in r["outputs"]}
        assert files(a[sid]) == files(b[sid]), f"{sid}: outputs differ between two cold builds"


def test_two_cold_builds_write_byte_identical_sites(smoke_build, second_cold_build):
    assert_same_site(smoke_build["site"], second_cold_build["site"])
    # Timings measured by the build itself would differ in the next build; the appendix shows only
    # the committed benchmark results, which are the same bytes every time.
    pages = b"".join((smoke_build["site"] / p).read_bytes() for p in ("index.html", "part-a.html", "part-b.html"))
    assert b"wall time" not in pages and b"images/s)" not in pages, "a build's own timings are on the site"
