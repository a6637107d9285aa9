# Sourced by the other scripts: create the virtual environment once and install lfkit into it.
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
echo "[lfkit] installing lfkit (regular, non-editable install: the plugin hook comes from the wheel)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$REPO/scripts/constraints.txt" "$REPO[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import lfkit, llamafactory, torch; print('[lfkit] lfkit', lfkit.__version__, '| llamafactory', llamafactory.__version__, '| torch', torch.__version__)"
export PATH="$VENV/bin:$PATH"
