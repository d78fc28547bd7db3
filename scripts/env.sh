# Sourced by the other scripts: make sure a virtual environment with the pinned dependencies exists.
# The environment is reused while pyproject.toml is unchanged (its hash is stamped inside it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_FOR_VENV="${PYTHON:-python3}"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.pyproject-sha256" 2>/dev/null)" != "$WANT" ]; then
  echo "setting up $VENV (dependencies from pyproject.toml) ..." >&2
  rm -rf "$VENV"
  "$PYTHON_FOR_VENV" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Install the pinned dependencies (not the project itself), so the environment does not
  # depend on where this checkout lives and can be shared between checkouts.
  "$VENV/bin/python" "$ROOT/scripts/requirements.py" > "$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet -r "$VENV/requirements.txt"
  echo "$WANT" > "$VENV/.pyproject-sha256"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1
cd "$ROOT"
# The site checkers (Nu HTML checker, axe-core) from package.json, reinstalled when its lock changes.
LOCK_SHA="$(sha256sum package-lock.json 2>/dev/null | cut -d' ' -f1)"
if command -v npm >/dev/null && [ -n "$LOCK_SHA" ] && [ "$(cat node_modules/.lock-sha256 2>/dev/null)" != "$LOCK_SHA" ]; then
  echo "installing the site checkers (npm ci) ..." >&2
  if npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2; then
    echo "$LOCK_SHA" > node_modules/.lock-sha256
  else
    echo "warning: npm ci failed; the site audits will skip" >&2
  fi
fi
