"""LlamaFactory's LogCallback, also writing lfkit's own log keys to ``trainer_log.jsonl``.

LlamaFactory's ``LogCallback.on_log`` builds each ``trainer_log.jsonl`` line from a fixed list of
keys of the trainer's last log (loss, eval_loss, lr, ...), so a key the trainer adds, such as
``ce_loss`` and ``kl_loss`` of ``kl_beta``, would reach ``trainer_state.json`` but not that file.
This subclass adds the keys listed in :data:`EXTRA_LOG_KEYS` to the line of the step they were
logged at; a line is otherwise unchanged, so runs without those keys write exactly LlamaFactory's file.
"""

from __future__ import annotations

from typing import Any

from lfkit.plugin.kl_loss import LOG_KEYS as KL_LOG_KEYS
from llamafactory.train.callbacks import LogCallback

EXTRA_LOG_KEYS: tuple[str, ...] = (*KL_LOG_KEYS,)


class LfkitLogCallback(LogCallback):
    """LogCallback whose ``trainer_log.jsonl`` lines also carry :data:`EXTRA_LOG_KEYS`."""

    def __init__(self) -> None:
        super().__init__()
        # step -> extra keys; on_log fills it before LlamaFactory submits the line to its writer
        # thread, which pops it in _write_log (each step's line is written once).
        self._extra_by_step: dict[int, dict[str, Any]] = {}

    def on_log(self, args, state, control, **kwargs):
        last = state.log_history[-1] if state.log_history else {}
        extra = {key: last[key] for key in EXTRA_LOG_KEYS if key in last}
        if extra and args.should_save:
            self._extra_by_step[state.global_step] = extra
        return super().on_log(args, state, control, **kwargs)

    def _write_log(self, output_dir: str, logs: dict[str, Any]) -> None:
        extra = self._extra_by_step.pop(logs.get("current_steps"), None)
        super()._write_log(output_dir, {**logs, **extra} if extra else logs)
