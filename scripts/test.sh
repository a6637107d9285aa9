#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: real LlamaFactory training on a tiny
# locally-built model, on the CPU. Extra arguments go to pytest, e.g. scripts/test.sh -k sampling
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO"
ruff check .
# Run from the repository so tests see the source tree; the installed wheel provides the
# llamafactory-cli hook that the training subprocesses use.
exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
