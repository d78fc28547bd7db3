"""Print the pinned dependencies of pyproject.toml, one per line, for `pip install -r`.

`--without torch` leaves a package out, e.g. to keep the CUDA build of torch a GPU machine has.
"""
import argparse
import re
import tomllib
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--without", nargs="*", default=[], metavar="PACKAGE")
parser.add_argument("--no-test", action="store_true", help="leave out the test dependencies")
args = parser.parse_args()
project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
deps = project["dependencies"] + extras["scale-out"] + ([] if args.no_test else extras["test"])
skip = {name.lower() for name in args.without}
print("\n".join(d for d in deps if re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0].lower() not in skip))
