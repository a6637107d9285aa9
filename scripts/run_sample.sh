#!/usr/bin/env bash
# The main job on the bundled sample, from nothing: create the environment, install lfkit,
# convert the bundled role-play sample with per-role sampling, build a tiny model locally,
# train it for a few steps with plain `llamafactory-cli train`, then report and plot the run.
# The steps themselves are scripts/sample_job.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec bash "$REPO/scripts/sample_job.sh" "$@"
