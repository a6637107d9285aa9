"""The environment of a training subprocess that must not reach a model hub.

Shared by the tests (``tests/conftest.py``) and ``scripts/record_cpu_runs.py``, which both start
``llamafactory-cli train`` on locally built models.
"""

from __future__ import annotations

import os
import sys


def offline_train_env(*, cpu_only: bool = True, **extra: str) -> dict[str, str]:
    """``os.environ`` plus the settings for an offline run; keyword arguments override them."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_DISABLED="true",
        TOKENIZERS_PARALLELISM="false",
        DISABLE_VERSION_CHECK="1",
        # explicit, so that a caller's in-process LlamaFactory use (recipe check lowers it) cannot
        # change what the runs log
        LLAMAFACTORY_VERBOSITY="INFO",
        # llamafactory-cli starts multi-process runs with the environment's own torchrun
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env
