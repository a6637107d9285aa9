"""Fail fast before loading: what ``llamafactory-cli train`` checks before anything is loaded.

LlamaFactory finds some recipe problems only after it has loaded the dataset or while it loads the
model, and reports them as long tracebacks: a hub model id with the hub out of reach costs about a
minute of retries first, a missing ``bitsandbytes`` is found after the dataset is tokenised, and
``fp16: true`` on a machine without CUDA is not found at all (accelerate silently trains in float32
on the CPU). The lfkit plugin runs :func:`check_train_command` in ``llamafactory-cli train`` (and
``lfkit train``) on the recipe exactly as LlamaFactory's ``read_args`` reads it (the YAML file plus
``KEY=VALUE`` overrides), in the launching process, before torchrun starts any rank. Every problem
found goes into one :class:`~lfkit.plugin.errors.ConfigError`, printed as one line:

* unknown keys, with the same did-you-mean as ``lfkit recipe check`` (:mod:`lfkit.suggest`), unless
  ``ALLOW_EXTRA_ARGS`` is set (then LlamaFactory ignores them too);
* precision the machine cannot run: ``fp16`` without CUDA; ``bf16`` without a bf16 GPU (Ampere or
  newer) unless ``use_cpu: true`` (torch's CPU autocast does run bf16: slow, but real);
  ``pure_bf16`` without a bf16 GPU (LlamaFactory refuses it on the CPU even with ``use_cpu``);
* GPU-only settings without CUDA: ``deepspeed`` (unless ``DS_ACCELERATOR`` names another
  accelerator); and the packages LlamaFactory would look for only later: ``deepspeed``, and
  ``bitsandbytes`` for ``quantization_bit`` with the default ``quantization_method``;
* model paths (``model_name_or_path``, ``adapter_name_or_path``, ``kl_ref_model``, ``ref_model``):
  an existing local path, or a hub id that is in the local Hugging Face cache or on a hub that
  answers. With ``HF_HUB_OFFLINE=1``, or a hub that does not answer one request within
  :data:`HUB_TIMEOUT_S`, an uncached hub id stops here.

Machines with a non-CUDA accelerator (NPU, XPU, MPS) skip the precision and GPU checks: their rules
are their own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from lfkit.plugin.errors import ConfigError

HUB_TIMEOUT_S = 5.0  # one request to the hub endpoint; a reachable hub answers well within it
_MODEL_KEYS = ("model_name_or_path", "adapter_name_or_path", "kl_ref_model", "ref_model")
_RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


def check_train_command(argv: list[str]) -> None:
    """Check a ``llamafactory-cli train RECIPE [KEY=VALUE ...]`` command line (``sys.argv``)."""
    if len(argv) < 3 or argv[1] != "train" or not argv[2].endswith(_RECIPE_SUFFIXES):
        return  # help, another command, or plain --key value arguments: LlamaFactory's own parse
    from llamafactory.hparams.parser import read_args

    saved = sys.argv
    sys.argv = [argv[0], *argv[2:]]  # as the launcher leaves it for read_args: the recipe first
    try:
        args = read_args()
    finally:
        sys.argv = saved
    if isinstance(args, dict):
        check_recipe(args, argv[2], tuple(argv[3:]))


def check_recipe(args: dict[str, Any], source: str, overrides: tuple[str, ...] = ()) -> None:
    """Raise one :class:`ConfigError` listing every problem of the recipe ``args`` read from ``source``.

    ``overrides`` are the ``KEY=VALUE`` words of the command line, which win over the file's keys.
    """
    lines = _key_lines(source)
    from_command_line = {word.split("=", 1)[0].split(".", 1)[0] for word in overrides}

    def where(key: str) -> str:
        if key in from_command_line:
            return f"{source} (command line {key}=...)"
        return f"{source}:{lines[key]}" if key in lines else source

    problems = [f"{where(key)}: {message}" for key, message in find_problems(args)]
    if problems:
        raise ConfigError("lfkit: " + "; ".join(problems))


def find_problems(args: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, message)`` for every problem of a recipe, in the order of the module docstring."""
    return [*_unknown_keys(args), *_device_problems(args), *_model_path_problems(args)]


def _unknown_keys(args: dict[str, Any]) -> Iterator[tuple[str, str]]:
    from dataclasses import fields

    from llamafactory.extras.misc import is_env_enabled
    from llamafactory.hparams import parser

    from lfkit.suggest import did_you_mean

    if is_env_enabled("ALLOW_EXTRA_ARGS"):
        return
    classes = parser._TRAIN_MCA_ARGS if is_env_enabled("USE_MCA") else parser._TRAIN_ARGS
    known = {f.name for cls in classes for f in fields(cls)}
    for key in args:
        if key not in known:
            yield key, f"unknown key '{key}' (LlamaFactory rejects it){did_you_mean(key, sorted(known))}"


def _device_problems(args: dict[str, Any]) -> list[tuple[str, str]]:
    import torch
    from llamafactory.extras.misc import is_accelerator_available

    cuda = torch.cuda.is_available()
    if not cuda and is_accelerator_available():
        return []  # NPU / XPU / MPS: not lfkit's hardware rules
    bf16_gpu = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    lacks_bf16 = f"{torch.cuda.get_device_name(0)} has no bf16" if cuda else "this machine has no CUDA GPU"
    out = []
    if args.get("fp16") and not cuda:
        out.append(("fp16", "fp16: true needs a CUDA GPU and this machine has none (on the CPU accelerate "
                    "would silently train in float32); set fp16: false, or bf16: true with use_cpu: true "
                    "to train in bf16 on the CPU"))  # fmt: skip
    if args.get("bf16") and not args.get("use_cpu") and not bf16_gpu:
        out.append(("bf16", f"bf16: true needs a GPU with bf16 (Ampere or newer) and {lacks_bf16}; "
                    "use fp16: true on a pre-Ampere GPU, or use_cpu: true to train in bf16 on the CPU "
                    "(slow)"))  # fmt: skip
    if args.get("pure_bf16") and not bf16_gpu:
        out.append(("pure_bf16", f"pure_bf16: true needs a GPU with bf16 (Ampere or newer) and {lacks_bf16}"))
    if args.get("deepspeed") and not _installed("deepspeed"):
        out.append(("deepspeed", "deepspeed is set but the deepspeed package is not installed"))
    elif args.get("deepspeed") and not cuda and not os.environ.get("DS_ACCELERATOR"):
        out.append(("deepspeed", "deepspeed needs CUDA GPUs and this machine has none; remove the key"))
    method = str(args.get("quantization_method", "bnb")).lower()
    bnb = args.get("quantization_bit") is not None and method in ("bnb", "bitsandbytes")
    if bnb and not _installed("bitsandbytes"):
        out.append(("quantization_bit", "quantization_bit needs the bitsandbytes package (pip install "
                    "bitsandbytes; its QLoRA kernels are written for CUDA GPUs)"))  # fmt: skip
    return out


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _model_path_problems(args: dict[str, Any]) -> Iterator[tuple[str, str]]:
    from llamafactory.extras.misc import is_env_enabled

    if any(args.get(k) for k in ("use_modelscope_hub", "use_openmind_hub")) or any(
        is_env_enabled(e) for e in ("USE_MODELSCOPE_HUB", "USE_OPENMIND_HUB")
    ):
        return  # other hubs, other caches
    hub = _Hub()
    for key in _MODEL_KEYS:
        value = args.get(key)
        names = value.split(",") if isinstance(value, str) else (value or [])
        for name in (str(n).strip() for n in names):
            if name:
                message = hub.problem(key, name)
                if message:
                    yield key, message


class _Hub:
    """Whether a model name is local, cached, or reachable on the Hugging Face hub (probed once)."""

    def __init__(self) -> None:
        self._reachable: bool | None = None

    def problem(self, key: str, name: str) -> str | None:
        from huggingface_hub import constants, try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        if os.path.exists(os.path.expanduser(name)):
            return None
        try:
            validate_repo_id(name)
        except HFValidationError:
            return f"{key} {name} is neither an existing local path nor a hub model id"
        filename = "adapter_config.json" if key == "adapter_name_or_path" else "config.json"
        if isinstance(try_to_load_from_cache(name, filename), str):
            return None
        fix = f"download it first (hf download {name}) or set {key} to a local directory"
        if constants.HF_HUB_OFFLINE:
            return (
                f"{key} {name} is not a local directory, not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}), and the hub is offline (HF_HUB_OFFLINE=1): {fix}"
            )
        if not self.reachable():
            return (
                f"{key} {name} is not a local directory, not in the Hugging Face cache, and the hub "
                f"({constants.ENDPOINT}) does not answer from this machine: {fix}"
            )
        return None

    def reachable(self) -> bool:
        if self._reachable is None:
            from huggingface_hub import constants
            from huggingface_hub.utils import get_session

            try:
                get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
                self._reachable = True
            except Exception:  # any failure to get an answer: DNS, refused, timeout, proxy, TLS
                self._reachable = False
        return self._reachable


def _key_lines(source: str) -> dict[str, int]:
    """The line of each top-level key in a YAML recipe (empty for JSON or an unreadable file)."""
    if not source.endswith((".yaml", ".yml")):
        return {}
    import yaml

    try:
        with open(source, encoding="utf-8") as f:
            node = yaml.compose(f)
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
