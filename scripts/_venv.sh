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
PIP_LOG="$(mktemp)"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
        -c "$REPO/scripts/constraints.txt" "$REPO[dev]" >"$PIP_LOG" 2>&1; then
    grep -v "^WARNING: Location" "$PIP_LOG" | tail -40
    echo "[lfkit] pip install failed (full log: $PIP_LOG)" >&2
    exit 1
fi
rm -f "$PIP_LOG"
"$VENV/bin/python" -c "import lfkit, llamafactory, torch; print('[lfkit] lfkit', lfkit.__version__, '| llamafactory', llamafactory.__version__, '| torch', torch.__version__)"
export PATH="$VENV/bin:$PATH"
