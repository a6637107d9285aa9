"""The table of LlamaFactory modules lfkit patches, and what it does to each.

Each entry maps a LlamaFactory module name to the functions applied right after that
module executes (see :mod:`lfkit.plugin.activate`). A patch function takes the module and
changes the names in it; it must be idempotent, since ``lfkit train`` may apply it to a
module that was imported before the hook.

Everything heavy is imported inside the patch functions, so this table stays cheap to load.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

_APPLIED_ATTR = "__lfkit_patched__"


def _patch_hparams_parser(module: ModuleType) -> None:
    """Swap LlamaFactory's FinetuningArguments for the subclass that declares lfkit's keys.

    The parser stays LlamaFactory's own HfArgumentParser with ``allow_extra_keys=False``,
    so a misspelt key is still rejected; only the declared lfkit keys become valid.
    """
    from lfkit.plugin.hparams import LfkitFinetuningArguments

    for name in ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS"):
        classes = getattr(module, name, None)
        if classes:
            setattr(module, name, [_swap(c, LfkitFinetuningArguments) for c in classes])


def _swap(cls: type, subclass: type) -> type:
    return subclass if cls is subclass.__mro__[1] else cls


def _patch_sft_workflow(module: ModuleType) -> None:
    """Make ``run_sft`` build lfkit's trainer (run record, timeseries lr groups, KL loss)."""
    from lfkit.plugin.trainer import LfkitSeq2SeqTrainer

    module.CustomSeq2SeqTrainer = LfkitSeq2SeqTrainer


PATCHES: dict[str, list[Callable[[ModuleType], None]]] = {
    "llamafactory.hparams.parser": [_patch_hparams_parser],
    "llamafactory.train.sft.workflow": [_patch_sft_workflow],
}


def apply_patches(fullname: str, module: ModuleType) -> None:
    """Apply the patches registered for ``fullname`` to ``module``, once."""
    if getattr(module, _APPLIED_ATTR, False):
        return
    for patch in PATCHES.get(fullname, ()):
        patch(module)
    setattr(module, _APPLIED_ATTR, True)
