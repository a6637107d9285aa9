"""The table of LlamaFactory modules lfkit patches, and what it does to each.

Each entry maps a LlamaFactory module name to the functions applied right after that
module executes (see :mod:`lfkit.plugin.activate`). A patch function takes the module and
changes the names in it; it must be idempotent, since ``lfkit train`` may apply it to a
module that was imported before the hook.

Everything heavy is imported inside the patch functions, so this table stays cheap to load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType

_APPLIED_ATTR = "__lfkit_patched__"


def _patch_hparams_parser(module: ModuleType) -> None:
    """Make LlamaFactory's argument parser accept (only) lfkit's declared keys."""
    hparams = sys.modules.get("lfkit.plugin.hparams")
    if hparams is not None and not hasattr(hparams, "install_into_parser"):
        return  # lfkit.plugin.hparams is being imported and installs itself when it is done
    from lfkit.plugin.hparams import install_into_parser

    install_into_parser(module)


def _patch_sft_workflow(module: ModuleType) -> None:
    """Make ``run_sft`` build lfkit's trainer (run record, timeseries lr groups, KL loss)."""
    from lfkit.plugin.trainer import LfkitSeq2SeqTrainer

    module.CustomSeq2SeqTrainer = LfkitSeq2SeqTrainer


def _patch_sft_model_args(module: ModuleType) -> None:
    """Let lfkit's trainer see run_sft's ModelArguments, which LlamaFactory does not hand it.

    kl_beta's frozen reference (freeze/full tuning) is loaded from them with LlamaFactory's own
    ``create_ref_model``; see :func:`lfkit.plugin.kl_reference.remember_model_args`.
    """
    from lfkit.plugin.kl_reference import remember_model_args

    module.load_model = remember_model_args(module.load_model)


def _patch_log_callback(module: ModuleType) -> None:
    """Make trainer_log.jsonl carry lfkit's log keys (ce_loss, kl_loss) next to LlamaFactory's."""
    from lfkit.plugin.trainer_log import LfkitLogCallback

    module.LogCallback = LfkitLogCallback


def _timeseries_patches() -> dict[str, list[Callable[[ModuleType], None]]]:
    from lfkit.plugin.timeseries import PATCHES as TIMESERIES_PATCHES

    return TIMESERIES_PATCHES


PATCHES: dict[str, list[Callable[[ModuleType], None]]] = {
    "llamafactory.hparams.parser": [_patch_hparams_parser],
    "llamafactory.train.sft.workflow": [_patch_sft_workflow, _patch_sft_model_args],
    "llamafactory.train.callbacks": [_patch_log_callback],
}

# The time-series (ChatTS) modality: dataset column, chatts template/plugin, tokenising,
# collating and encoder training; see lfkit.plugin.timeseries (import-light entry points).
for _name, _fns in _timeseries_patches().items():
    PATCHES.setdefault(_name, []).extend(_fns)


def apply_patches(fullname: str, module: ModuleType) -> None:
    """Apply the patches registered for ``fullname`` to ``module``, once."""
    if getattr(module, _APPLIED_ATTR, False):
        return
    for patch in PATCHES.get(fullname, ()):
        patch(module)
    setattr(module, _APPLIED_ATTR, True)
