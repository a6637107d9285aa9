#!/usr/bin/env bash
# Set up .venv if needed (install only when pyproject.toml or the sources changed), then run
# ruff and the tests: real LlamaFactory training on a tiny locally-built model, on the CPU.
#   scripts/test.sh           the whole suite, as CI runs it (.ci/run)
#   scripts/test.sh --fast    everything but the tests marked `train` (training processes,
#                             torchrun, Ray) or `slow`: the quick lane while working, spread
#                             over up to 4 pytest processes (pytest-xdist; one per CPU)
# Further arguments go to pytest, e.g. scripts/test.sh --fast -k sampling
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO"
lane=()
if [ "${1:-}" = "--fast" ]; then
    shift
    lane=(-m "not train and not slow" -n auto --maxprocesses 4)
fi
ruff check .
# The tests exercise the installed wheel that _venv.sh keeps current with this checkout: its
# lfkit_plugin.pth imports lfkit from site-packages at interpreter start, in pytest and in
# every llamafactory-cli subprocess alike. --durations lists the slowest tests at the end.
exec "$VENV/bin/pytest" -p no:cacheprovider --durations=15 "${lane[@]}" "$@"
