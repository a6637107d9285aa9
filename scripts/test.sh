#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: real LlamaFactory training on a tiny
# locally-built model, on the CPU. Extra arguments go to pytest, e.g. scripts/test.sh -k sampling
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO"
ruff check .
# The tests exercise the installed wheel that _venv.sh has just (re)built from this checkout:
# its lfkit_plugin.pth imports lfkit from site-packages at interpreter start, in pytest and in
# every llamafactory-cli subprocess alike.
exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
