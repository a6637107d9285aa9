"""``lfkit recipe check``: validate recipes with LlamaFactory's own argument parser.

Each recipe goes through exactly the function ``llamafactory-cli train`` calls first,
``llamafactory.hparams.get_train_args``, in this process, with the lfkit plugin active (so
lfkit's keys parse and a misspelt key is rejected as LlamaFactory rejects it). The parse
is the real one, with these values swapped for this CPU-only, offline machine -- and only
these, each for a stated reason:

* ``model_name_or_path`` -> a tiny local Qwen2 (:mod:`lfkit.tiny_model`): the hub is out of
  reach, and its tokenizer lets LlamaFactory resolve the ``template`` name for real. Nothing
  is loaded from the recipe's model, so ``trust_remote_code`` and ``quantization_bit`` are
  parsed and cross-checked but bitsandbytes and the remote code are not exercised.
* ``deepspeed`` -> removed before the parse: transformers imports the deepspeed package
  (GPU-only, not installed here) as soon as the key is set, and LlamaFactory then demands a
  distributed launch. lfkit checks the JSON itself instead: it exists, parses, has a valid
  ZeRO stage, and its non-``auto`` values agree with the recipe (as the HF integration
  requires at launch). LlamaFactory's ZeRO-3 incompatibilities (``pure_bf16``,
  ``predict_with_generate``, ``pissa_init``, ``use_unsloth``) are re-checked against it.
* ``use_cpu: true`` added: transformers refuses ``bf16`` when the local device lacks it;
  whether the target GPU has bf16 is ``lfkit plan``'s job (Turing has none).
* ``pure_bf16`` -> false for the same reason (LlamaFactory checks the local GPU).
* ``output_dir`` -> a temporary directory: LlamaFactory inspects it for checkpoints to resume
  from, which depends on the machine, not the recipe.

Beyond the parse, every referenced file must exist: the DeepSpeed config, ``dataset_dir``
(relative paths resolve from the working directory, as for ``llamafactory-cli``), each
``dataset``/``eval_dataset`` name in its ``dataset_info.json`` and that entry's local file,
and local model/adapter paths. Values are read with OmegaConf, as LlamaFactory reads them
(PyYAML would read ``2e-4`` as a string); duplicate keys, which OmegaConf refuses, are reported.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lfkit.planning.recipe_yaml import load_values
from lfkit.suggest import did_you_mean

DEFAULT_DATASET_DIR = "data"
_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one recipe."""

    recipe: str
    key: str
    line: int | None
    message: str

    def where(self) -> str:
        return f"{self.recipe}:{self.line}" if self.line else self.recipe


@dataclass
class RecipeSource:
    """A recipe's mapping and the line each top-level key is on."""

    path: Path
    values: dict[str, Any]
    lines: dict[str, int]


class RecipeLoadError(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def load_recipe(path: Path) -> tuple[RecipeSource, list[Problem]]:
    """The recipe with its key line numbers; duplicate keys are problems (OmegaConf refuses them)."""
    text = path.read_text(encoding="utf-8")
    name = str(path)
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise RecipeLoadError(Problem(name, "(yaml)", line, f"not valid YAML: {err}")) from None
    if node is None:
        raise RecipeLoadError(Problem(name, "(yaml)", None, "empty recipe"))
    if not isinstance(node, yaml.MappingNode):
        raise RecipeLoadError(Problem(name, "(yaml)", node.start_mark.line + 1, "a recipe must be a mapping"))
    lines: dict[str, int] = {}
    problems = []
    for key_node, _ in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in lines:
            msg = f"duplicate key (also on line {lines[key]}): LlamaFactory's loader refuses the file"
            problems.append(Problem(name, key, line, msg))
        lines[key] = line
    if problems:
        values = yaml.safe_load(text)  # keep checking the rest, last value winning
    else:
        try:
            values = load_values(path)
        except Exception as err:  # OmegaConf refuses what PyYAML accepted (e.g. interpolation syntax)
            msg = f"LlamaFactory's loader (OmegaConf) fails: {err}"
            raise RecipeLoadError(Problem(name, "(yaml)", None, msg)) from None
    return RecipeSource(path, values, lines), problems


# ---------------------------------------------------------------------------------------
# referenced files
# ---------------------------------------------------------------------------------------
def _looks_local(value: str) -> bool:
    """A path rather than a hub id (``owner/name``)."""
    return value.startswith(("/", "./", "../", "~")) or value.count("/") >= 2 or Path(value).exists()


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def check_files(src: RecipeSource, root: Path) -> tuple[list[Problem], dict[str, Any] | None]:
    """Referenced files must exist. Returns the problems and the DeepSpeed config (if readable)."""
    r, name, line = src.values, str(src.path), src.lines.get
    problems: list[Problem] = []

    def problem(key: str, msg: str) -> None:
        problems.append(Problem(name, key, line(key), msg))

    ds_cfg = None
    if r.get("deepspeed"):
        ds_path = root / str(r["deepspeed"])
        if not ds_path.is_file():
            problem("deepspeed", f"DeepSpeed config {r['deepspeed']} does not exist (resolved from {root})")
        else:
            try:
                ds_cfg = json.loads(ds_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                problem("deepspeed", f"{r['deepspeed']}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})")

    data_dir_value = str(r.get("dataset_dir", DEFAULT_DATASET_DIR))
    names = [("dataset", n) for n in _split(r.get("dataset"))] + [
        ("eval_dataset", n) for n in _split(r.get("eval_dataset"))
    ]
    if names and not data_dir_value.startswith(("REMOTE:", "ONLINE")):
        data_dir = root / data_dir_value
        key = "dataset_dir" if "dataset_dir" in r else "dataset"
        if not data_dir.is_dir():
            problem(key, f"dataset_dir {data_dir_value} does not exist (resolved from {root})")
        else:
            info_path = data_dir / "dataset_info.json"
            info: dict[str, Any] = {}
            if not info_path.is_file():
                problem(key, f"{data_dir_value}/dataset_info.json does not exist")
            else:
                try:
                    info = json.loads(info_path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as err:
                    problem(key, f"{info_path}:{err.lineno}: not valid JSON ({err.msg})")
            for k, ds_name in names:
                if not info:
                    break
                if ds_name not in info:
                    hint = did_you_mean(ds_name, info)
                    problem(
                        k,
                        f"dataset '{ds_name}' is not registered in {data_dir_value}/dataset_info.json{hint}",
                    )
                    continue
                entry = info[ds_name]
                if any(entry.get(h) for h in _HUB_KEYS) or not entry.get("file_name"):
                    continue
                if not (data_dir / entry["file_name"]).exists():
                    problem(
                        k, f"dataset '{ds_name}': file {data_dir_value}/{entry['file_name']} does not exist"
                    )

    for key in ("model_name_or_path", "adapter_name_or_path", "kl_ref_model", "ref_model"):
        for value in _split(r.get(key)):
            if _looks_local(value) and not (root / Path(value).expanduser()).exists():
                problem(key, f"local path {value} does not exist")
    return problems, ds_cfg


def check_deepspeed(src: RecipeSource, ds_cfg: dict[str, Any]) -> list[Problem]:
    """The DeepSpeed config's own validity and its agreement with the recipe."""
    r, name, line = src.values, str(src.path), src.lines.get("deepspeed")
    out: list[Problem] = []
    zero = ds_cfg.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        out.append(Problem(name, "deepspeed", line, f"zero_optimization.stage must be 0-3, got {stage!r}"))
    if str((zero.get("offload_param") or {}).get("device", "none")) != "none" and stage != 3:
        out.append(Problem(name, "deepspeed", line, "offload_param needs zero_optimization.stage 3"))

    def agree(ds_value: Any, recipe_key: str, recipe_value: Any, what: str) -> None:
        if ds_value is not None and ds_value != "auto" and ds_value != recipe_value:
            out.append(
                Problem(
                    name,
                    recipe_key,
                    src.lines.get(recipe_key, line),
                    f"{what} is {ds_value!r} in {r['deepspeed']} but {recipe_key} is {recipe_value!r} "
                    '(the HF DeepSpeed integration refuses the mismatch; use "auto")',
                )
            )

    agree((ds_cfg.get("fp16") or {}).get("enabled"), "fp16", bool(r.get("fp16")), "fp16.enabled")
    agree((ds_cfg.get("bf16") or {}).get("enabled"), "bf16", bool(r.get("bf16")), "bf16.enabled")
    agree(
        ds_cfg.get("train_micro_batch_size_per_gpu"),
        "per_device_train_batch_size",
        r.get("per_device_train_batch_size", 8),
        "train_micro_batch_size_per_gpu",
    )
    agree(
        ds_cfg.get("gradient_accumulation_steps"),
        "gradient_accumulation_steps",
        r.get("gradient_accumulation_steps", 1),
        "gradient_accumulation_steps",
    )
    if stage == 3:
        for key in ("pure_bf16", "predict_with_generate", "pissa_init", "use_unsloth"):
            if r.get(key):
                out.append(
                    Problem(
                        name,
                        key,
                        src.lines.get(key),
                        f"{key} is incompatible with DeepSpeed ZeRO-3 (LlamaFactory refuses it at launch)",
                    )
                )
    return out


# ---------------------------------------------------------------------------------------
# the parse
# ---------------------------------------------------------------------------------------
def _known_keys() -> list[str]:
    from dataclasses import fields

    from llamafactory.hparams import parser as lf_parser

    return sorted({f.name for cls in lf_parser._TRAIN_ARGS for f in fields(cls)})


def _guess_key(message: str, recipe: dict[str, Any]) -> str:
    """The recipe key an error message is about (the longest key named in it)."""
    mentioned = [k for k in recipe if re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", message)]
    return max(mentioned, key=len) if mentioned else "(recipe)"


def parse_with_llamafactory(src: RecipeSource, tiny_model: Path) -> list[Problem]:
    """Run ``get_train_args`` on the recipe with the substitutions the module docstring lists."""
    from llamafactory.hparams import get_train_args

    name = str(src.path)
    args = dict(src.values)
    args.pop("deepspeed", None)
    args["model_name_or_path"] = str(tiny_model)
    args["pure_bf16"] = False
    args["use_cpu"] = True
    out_dir = tempfile.mkdtemp(prefix="lfkit-recipe-check-")
    args["output_dir"] = out_dir
    problems: list[Problem] = []
    try:
        with _quiet():
            model_args, data_args, *_ = get_train_args(args)
    except ImportError as err:  # LlamaFactory's check_version: a package this recipe needs is missing
        key = _guess_key(str(err), src.values)
        problems.append(Problem(name, key, src.lines.get(key), f"needs a package not installed here: {err}"))
        return problems
    except Exception as err:  # ValueError / AssertionError from the dataclasses, or anything else
        message = str(err) or type(err).__name__
        unused = re.search(r"Some keys are not used by the HfArgumentParser: \[(.*)\]", message)
        if unused:
            known = _known_keys()
            for key in re.findall(r"'([^']+)'", unused.group(1)):
                hint = did_you_mean(key, known)
                problems.append(
                    Problem(name, key, src.lines.get(key), f"unknown key (LlamaFactory rejects it){hint}")
                )
        else:
            key = _guess_key(message, src.values)
            problems.append(
                Problem(name, key, src.lines.get(key), f"LlamaFactory rejects the recipe: {message}")
            )
        return problems
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    problems.extend(_check_template(src, model_args, data_args))
    return problems


@contextlib.contextmanager
def _quiet():
    """Silence LlamaFactory's and transformers' advice while parsing (the problems are collected)."""
    import logging

    import transformers

    loggers = [logging.getLogger(n) for n in ("llamafactory", "transformers")]
    levels = [lg.level for lg in loggers]
    verbosity = transformers.logging.get_verbosity()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)


def _check_template(src: RecipeSource, model_args: Any, data_args: Any) -> list[Problem]:
    """Resolve ``template`` through LlamaFactory (with the plugin's templates) on the tiny tokenizer."""
    from llamafactory.data.template import TEMPLATES
    from llamafactory.model import load_tokenizer

    template = src.values.get("template")
    if template is None:
        return []
    if template not in TEMPLATES:
        hint = did_you_mean(str(template), TEMPLATES)
        return [
            Problem(
                str(src.path),
                "template",
                src.lines.get("template"),
                f"template '{template}' is not registered in LlamaFactory or the lfkit plugin{hint}",
            )
        ]
    from llamafactory.data import get_template_and_fix_tokenizer

    try:
        with _quiet():
            tokenizer = load_tokenizer(model_args)["tokenizer"]
            get_template_and_fix_tokenizer(tokenizer, data_args)
    except (ValueError, KeyError) as err:
        return [
            Problem(str(src.path), "template", src.lines.get("template"), f"template '{template}': {err}")
        ]
    return []


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------
def tiny_model_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lfkit" / "recipe-check-tiny-model"


def ensure_tiny_model(path: Path | None = None) -> Path:
    """The tiny model the parse uses: ``path`` if given, else a cached build (built once, atomically)."""
    if path is not None:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a model directory")
        return path
    target = tiny_model_cache_dir()
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    from lfkit.atomic import atomic_dir
    from lfkit.tiny_model import build_tiny_model

    with atomic_dir(target, exist_ok=True) as tmp:  # another process may build it at the same time
        build_tiny_model(tmp)
    return target


def find_recipes(paths: list[Path]) -> list[Path]:
    """YAML files under the given files and directories, sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            found.append(p)
    return found


def check_recipe(path: Path, tiny_model: Path, root: Path) -> list[Problem]:
    """Every problem with one recipe (empty list = it would launch)."""
    try:
        src, problems = load_recipe(path)
    except RecipeLoadError as err:
        return [err.problem]
    except OSError as err:
        return [Problem(str(path), "(file)", None, str(err))]
    file_problems, ds_cfg = check_files(src, root)
    problems.extend(file_problems)
    if ds_cfg is not None:
        problems.extend(check_deepspeed(src, ds_cfg))
    problems.extend(parse_with_llamafactory(src, tiny_model))
    return problems


def activate_plugin() -> bool:
    """Make sure the lfkit plugin patches LlamaFactory in this process (before its import)."""
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    from lfkit.plugin.activate import install

    return install()
