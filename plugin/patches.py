"""The table of LlamaFactory modules lfkit patches, what it does to each, and what each patch relies on.

Each entry maps a LlamaFactory module name to the :class:`~lfkit.plugin.patching.Patch`es applied
right after that module executes (see :mod:`lfkit.plugin.activate`). A patch declares every name it
relies on in its module, with the parameters lfkit was written against; :func:`apply_patches`
checks them all before it changes anything (one line naming what moved, if anything did) and then
rebinds the replaced names in the LlamaFactory modules that imported the originals
(:mod:`lfkit.plugin.patching` says why).

The time-series patches come from :data:`lfkit.plugin.timeseries.PATCHES`; an entry there may be a
``Patch`` already, or a bare function whose names are declared in :data:`TIMESERIES_NAMES` here.

Everything heavy is imported inside the patch functions, so this table stays cheap to load.
"""

from __future__ import annotations

import sys
from types import ModuleType

from lfkit.plugin.patching import (
    Name,
    Patch,
    check_names,
    rebind_importers,
    snapshot,
    warn_on_other_version,
)

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


def _patch_cli_main(module: ModuleType) -> None:
    """Check ``llamafactory-cli train``'s recipe before anything loads; print lfkit's refusals as one line."""
    if getattr(module.main, "__lfkit_checks__", False):
        return
    import functools

    main = module.main

    @functools.wraps(main)
    def checked_main():
        from lfkit.plugin.errors import LfkitError

        try:
            from lfkit.plugin.preflight import check_train_command

            check_train_command(sys.argv)
            return main()
        except LfkitError as err:
            sys.exit(str(err))  # the one line on stderr, exit status 1: no traceback for a refusal

    checked_main.__lfkit_checks__ = True
    module.main = checked_main


def _patch_ray_launcher(module: ModuleType) -> None:
    """Make ``USE_RAY=1`` reserve ``ray_num_workers`` bundles, not one per device of the cluster."""
    from lfkit.plugin.ray_launch import patch_tuner

    patch_tuner(module)


def _patch_stage_workflows(module: ModuleType) -> None:
    """Attach lfkit's run record and run summary to every stage's workflow (run_pt ... run_kto)."""
    from lfkit.plugin.workflows import STAGE_WORKFLOWS, with_lfkit_run

    for name in STAGE_WORKFLOWS:
        setattr(module, name, with_lfkit_run(getattr(module, name)))


_WORKFLOW_ARGS = ("model_args", "data_args", "training_args", "finetuning_args")
_TRAINER_INIT = ("self", "finetuning_args", "processor", "model_args", "gen_kwargs", "ref_model", "**kwargs")
# LlamaFactory's private tokenising method, called by position by lfkit.plugin.timeseries.processing
_ENCODE_EXAMPLE = ("self", "prompt", "response", "system", "tools", "images", "videos", "audios")
_REGISTER_TEMPLATE = (
    "name", "format_user", "format_assistant", "format_system", "format_function", "format_observation",
    "format_tools", "format_prefix", "default_system", "stop_words", "thought_words", "tool_call_words",
    "efficient_eos", "replace_eos", "replace_jinja_template", "enable_thinking", "preserve_thinking",
    "mm_plugin", "template_class",
)  # fmt: skip

# The time-series patches' names, by patch function (see the module docstring).
TIMESERIES_NAMES: dict[str, tuple[Name, ...]] = {
    "patch_parser": (
        Name("DatasetAttr.join", ("self", "attr")),
        Name("DatasetAttr.set_attr", ("self", "key", "obj", "default")),
    ),
    "patch_converter": (
        Name(
            "align_dataset", ("dataset", "dataset_attr", "data_args", "training_args"), rebind_importers=True
        ),
        Name("get_dataset_converter", ("name", "dataset_attr", "data_args")),
    ),
    "patch_mm_plugin": (
        Name("PLUGINS"),
        Name("BasePlugin", ("image_token", "video_token", "audio_token", "expand_mm_tokens")),
    ),
    "patch_template": (
        Name("TEMPLATES"),
        Name("register_template", _REGISTER_TEMPLATE),
        Name("get_mm_plugin", ("name", "image_token", "video_token", "audio_token", "**kwargs")),
    ),
    "patch_supervised": (
        Name("SupervisedDatasetProcessor.preprocess_dataset", ("self", "examples")),
        Name("SupervisedDatasetProcessor._encode_data_example", _ENCODE_EXAMPLE),
        Name("PackedSupervisedDatasetProcessor.preprocess_dataset", ("self", "examples")),
    ),
    "patch_unsupervised": (
        Name("UnsupervisedDatasetProcessor.preprocess_dataset", ("self", "examples")),
        Name("UnsupervisedDatasetProcessor._encode_data_example", _ENCODE_EXAMPLE),
    ),
    "patch_loader": (
        # private, and called by position (lfkit.plugin.timeseries.processing.patch_loader)
        Name(
            "_get_preprocessed_dataset",
            (
                "dataset", "data_args", "training_args", "stage", "template", "tokenizer", "processor",
                "is_eval",
            ),  # fmt: skip
        ),
    ),
    "patch_collator": (Name("MultiModalDataCollatorForSeq2Seq.__call__", ("self", "features")),),
    "patch_adapter": (
        Name(
            "init_adapter",
            ("config", "model", "model_args", "finetuning_args", "is_trainable"),
            rebind_importers=True,
        ),
        # used (and replaced) in the adapter module itself; defined in model_utils.visual, left as it is
        Name("patch_target_modules", ("model", "finetuning_args", "target_modules")),
    ),
    # wrapped where load_model calls it (imported from model.patcher), so ChatTS fixes precede it
    "patch_model_loader": (
        Name("patch_model", ("model", "tokenizer", "model_args", "is_trainable", "add_valuehead")),
    ),
}


def _timeseries_patches() -> dict[str, list[Patch]]:
    from lfkit.plugin.timeseries import PATCHES as TIMESERIES_PATCHES

    table: dict[str, list[Patch]] = {}
    for module, entries in TIMESERIES_PATCHES.items():
        for entry in entries:
            if not isinstance(entry, Patch):
                names = TIMESERIES_NAMES.get(entry.__name__)
                if names is None:
                    raise RuntimeError(
                        f"time-series patch {entry.__name__} for {module} declares no LlamaFactory names: "
                        "add them to lfkit.plugin.patches.TIMESERIES_NAMES or register it as a Patch."
                    )
                entry = Patch(entry, names)
            table.setdefault(module, []).append(entry)
    return table


PATCHES: dict[str, list[Patch]] = {
    "llamafactory.hparams.parser": [
        Patch(
            _patch_hparams_parser,
            (
                *(Name(n) for n in ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS")),
                Name("FinetuningArguments"),
                Name("read_args", ("args",)),  # called by lfkit.plugin.preflight
            ),
        )
    ],
    "llamafactory.train.sft.workflow": [
        Patch(
            _patch_sft_workflow,
            (
                Name("CustomSeq2SeqTrainer.__init__", _TRAINER_INIT),
                Name("CustomSeq2SeqTrainer.compute_loss", ("self", "model", "inputs", "*args", "**kwargs")),
                Name("CustomSeq2SeqTrainer.create_optimizer", ("self", "*args", "**kwargs")),
            ),
        ),
        Patch(
            _patch_sft_model_args,
            (
                Name(
                    "load_model",
                    ("tokenizer", "model_args", "finetuning_args", "is_trainable", "add_valuehead"),
                ),
                Name("create_ref_model", ("model_args", "finetuning_args", "add_valuehead")),
            ),
        ),
    ],
    "llamafactory.train.callbacks": [
        Patch(
            _patch_log_callback,
            (
                Name("LogCallback", (), rebind_importers=True),  # train/tuner.py builds it
                Name("LogCallback.on_log", ("self", "args", "state", "control", "**kwargs")),
                Name("LogCallback._write_log", ("self", "output_dir", "logs")),
            ),
        )
    ],
    "llamafactory.train.tuner": [
        Patch(
            _patch_ray_launcher,
            (
                Name("_ray_training_function", ("ray_args", "config")),
                Name("get_placement_group", ("num_workers",)),  # swapped while a Ray launch starts
            ),
        ),
        Patch(
            _patch_stage_workflows,
            tuple(
                Name(name, (*_WORKFLOW_ARGS, *extra, "callbacks"))
                for name, extra in (
                    ("run_pt", ()),
                    ("run_sft", ("generating_args",)),
                    ("run_rm", ()),
                    ("run_ppo", ("generating_args",)),
                    ("run_dpo", ()),
                    ("run_kto", ()),
                )
            ),
        ),
    ],
    "llamafactory.cli": [Patch(_patch_cli_main, (Name("main", ()),))],
}
# The time-series (ChatTS) modality: dataset column, chatts template/plugin, tokenising,
# collating and encoder training; see lfkit.plugin.timeseries (import-light entry points).
for _name, _patches in _timeseries_patches().items():
    PATCHES.setdefault(_name, []).extend(_patches)


def apply_patches(fullname: str, module: ModuleType) -> None:
    """Check and apply the patches registered for ``fullname`` to ``module``, once.

    Raises :class:`~lfkit.plugin.errors.LlamaFactoryMismatch` (before changing anything) when a
    declared name is missing or its parameters changed.
    """
    if getattr(module, _APPLIED_ATTR, False):
        return
    patches = PATCHES.get(fullname, ())
    warn_on_other_version()
    check_names(fullname, module, patches)
    before = snapshot(module, patches)
    for patch in patches:
        patch.apply(module)
    rebind_importers(fullname, module, before)
    setattr(module, _APPLIED_ATTR, True)
