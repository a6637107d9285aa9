# Sourced by the other scripts: create the virtual environment once, and install lfkit into it
# when pyproject.toml or the sources changed since the last install (scripts/install.py).
#   LFKIT_VENV   where the environment lives (default: .venv in the repository)
#   LFKIT_PYTHON the interpreter that creates it (default: python3.11, else python3)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LFKIT_VENV:-$REPO/.venv}"
PY="${LFKIT_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[lfkit] creating virtual environment $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" "$REPO/scripts/install.py"
export PATH="$VENV/bin:$PATH"
