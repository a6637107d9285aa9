"""lfkit's work around every LlamaFactory training stage: the run record and the run summary.

LlamaFactory's tuner (``llamafactory.train.tuner._training_function``) hands each stage to one
workflow function, ``run_pt``, ``run_sft``, ``run_rm``, ``run_ppo``, ``run_dpo`` or ``run_kto``,
and every one of them takes ``(model_args, data_args, training_args, finetuning_args,
[generating_args,] callbacks)`` and passes ``callbacks`` to the trainer it builds. So the one
place that sees every stage, all of a run's arguments and the end of the whole workflow
(training, the final evaluation and prediction, all files written) is that call.
:mod:`lfkit.plugin.patches` wraps those six names in the tuner with :func:`with_lfkit_run`:

* before the workflow: with ``lfkit_run_record`` (the default) the run-record callback joins
  the callbacks list, so DPO, KTO, ORPO/SimPO, RM, PT and PPO runs get ``lfkit_run.json`` like
  SFT runs do;
* after it: with ``lfkit_summary`` (the default) the process that writes ``output_dir``
  (``training_args.should_save``) writes the run's lfkit plots and one-run summary
  (:mod:`lfkit.plugin.run_summary`); a failure there is a warning, never a failed run.

The Megatron (``use_mca``) and ``use_hyper_parallel`` paths call their own workflows and are
not wrapped.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGE_WORKFLOWS = ("run_pt", "run_sft", "run_rm", "run_ppo", "run_dpo", "run_kto")
"""The workflow names in ``llamafactory.train.tuner`` that :func:`with_lfkit_run` wraps."""
REQUIRED_PARAMETERS = ("model_args", "data_args", "training_args", "finetuning_args", "callbacks")
"""The parameters every wrapped workflow must have (``generating_args`` is used when present)."""

_WRAPPED_ATTR = "__lfkit_run__"


def with_lfkit_run(workflow: Callable[..., Any]) -> Callable[..., Any]:
    """``workflow`` with lfkit's run-record callback attached and its run summary written after it."""
    if getattr(workflow, _WRAPPED_ATTR, False):
        return workflow
    signature = inspect.signature(workflow)
    missing = [p for p in REQUIRED_PARAMETERS if p not in signature.parameters]
    if missing:  # a LlamaFactory this lfkit does not know: train as stock, say what is lost
        warnings.warn(
            f"lfkit: LlamaFactory's {workflow.__qualname__} takes no {', '.join(missing)}; this run gets "
            "no lfkit_run.json and no lfkit summary",
            stacklevel=2,
        )
        return workflow

    @functools.wraps(workflow)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        finetuning_args, training_args = given["finetuning_args"], given["training_args"]
        if given["callbacks"] is None:
            given["callbacks"] = []
        if getattr(finetuning_args, "lfkit_run_record", False):
            from lfkit.plugin.run_record import RunRecordCallback, parsed_arguments

            arguments = parsed_arguments(
                given["model_args"],
                given["data_args"],
                training_args,
                finetuning_args,
                given.get("generating_args"),
            )
            given["callbacks"].append(RunRecordCallback(finetuning_args, arguments))
        result = workflow(*bound.args, **bound.kwargs)
        if getattr(finetuning_args, "lfkit_summary", False) and training_args.should_save:
            from lfkit.plugin.run_summary import write_run_summary

            write_run_summary(Path(training_args.output_dir))
        return result

    setattr(run, _WRAPPED_ATTR, True)
    return run
