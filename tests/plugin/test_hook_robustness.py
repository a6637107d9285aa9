"""The hook against the LlamaFactory it meets: modules imported before it, and names that moved.

Each scenario runs in its own interpreter started with ``LFKIT_DISABLE_PLUGIN=1`` (so the ``.pth``
hook stays out of the way), imports LlamaFactory modules first, possibly takes a name away or changes
one as a different LlamaFactory would have it, and only then activates the plugin with
``lfkit.plugin.activate.install()``, as ``lfkit train`` does in a source checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import tiny_recipe, train_env
from safetensors.torch import load_file

from lfkit.tiny_chatts import build_tiny_chatts

# The modules that keep their own references to patched names (from .converter import align_dataset,
# from .adapter import init_adapter, from .callbacks import LogCallback); train.tuner imports all the rest.
_IMPORT_FIRST = "import llamafactory.model.loader, llamafactory.data.loader, llamafactory.train.tuner"


def _late(body: str, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``body`` after importing LlamaFactory without the plugin; ``activate()`` installs it then."""
    code = textwrap.dedent(
        f"""
        import os, sys
        {_IMPORT_FIRST}

        def activate():
            del os.environ["LFKIT_DISABLE_PLUGIN"]
            from lfkit.plugin.activate import install
            assert install()
        """
    ) + textwrap.dedent(body)
    env = train_env(LFKIT_DISABLE_PLUGIN="1")
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


_TRAIN = """
activate()
from llamafactory.train.tuner import run_exp
sys.argv = sys.argv[:2]  # the recipe, read as llamafactory-cli train reads it
run_exp()
"""


def _train_late(recipe: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / f"{recipe['output_dir'].split('/')[-1]}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = _late(_TRAIN, str(path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _text_data(dataset_dir):
    rows = [
        {"instruction": f"Greet person {i}.", "input": "", "output": f"Hello, person {i}!"} for i in range(8)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "greet.json").write_text(json.dumps(rows))
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"greet": {"file_name": "greet.json"}}))


def _series_data(dataset_dir):
    rows = [
        {
            "input": "Describe <ts><ts/>.",
            "output": "It oscillates.",
            "timeseries": [[float(j % 5) for j in range(9)]],
        }
        for _ in range(4)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "series.json").write_text(json.dumps(rows))
    columns = {"prompt": "input", "response": "output", "timeseries": "timeseries"}
    info = {"series": {"file_name": "series.json", "columns": columns}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info))


@pytest.mark.train
def test_kl_log_keys_survive_llamafactory_imported_before_the_hook(tiny_model, tmp_path):
    """train/tuner.py builds its own LogCallback; only lfkit's writes kl_loss to trainer_log.jsonl."""
    _text_data(tmp_path / "data")
    recipe = tiny_recipe(tiny_model, tmp_path / "data", "greet", tmp_path / "kl", max_steps=2, kl_beta=0.1)
    _train_late(recipe, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "kl" / "trainer_log.jsonl").read_text().splitlines()]
    assert [("ce_loss" in r, "kl_loss" in r) for r in lines if "loss" in r] == [(True, True)] * 2


@pytest.mark.train
def test_series_and_encoder_freeze_survive_llamafactory_imported_before_the_hook(tmp_path):
    """data/loader.py and model/loader.py keep their own align_dataset and init_adapter.

    With lfkit's align_dataset the series reach tokenising (the printed example carries the
    processor's offset/scaling text); with lfkit's init_adapter ``train_timeseries_modules: false``
    leaves the encoder bit-identical under full tuning, which would otherwise train it.
    """
    model = build_tiny_chatts(tmp_path / "chatts")
    _series_data(tmp_path / "data")
    recipe = tiny_recipe(
        model, tmp_path / "data", "series", tmp_path / "ts", template="chatts", trust_remote_code=True,
        finetuning_type="full", lora_target=None, lora_rank=None, max_steps=1, learning_rate=1.0e-2,
        train_timeseries_modules=False,
    )  # fmt: skip
    proc = _train_late(recipe, tmp_path)
    assert "offset=" in proc.stdout + proc.stderr  # the tiny checkpoint's processor's scaling text
    before, after = load_file(model / "model.safetensors"), load_file(tmp_path / "ts" / "model.safetensors")
    encoder = [k for k in before if k.startswith("ts_encoder.")]
    assert encoder and all(before[k].equal(after[k]) for k in encoder)
    assert any(not before[k].equal(after[k]) for k in before if not k.startswith("ts_encoder."))


@pytest.mark.slow  # a fresh interpreter importing LlamaFactory: ~10 s each
@pytest.mark.parametrize(
    "alteration, expected",
    [
        (
            "import llamafactory.data.processor.supervised as m\n"
            "del m.SupervisedDatasetProcessor._encode_data_example",
            "llamafactory.data.processor.supervised.SupervisedDatasetProcessor._encode_data_example "
            "is missing",
        ),
        (
            "import llamafactory.data.converter as m\n"
            "def align_dataset(dataset, dataset_attr, data_args): pass\n"
            "m.align_dataset = align_dataset",
            "llamafactory.data.converter.align_dataset takes (dataset, dataset_attr, data_args) where lfkit "
            "expects (dataset, dataset_attr, data_args, training_args)",
        ),
    ],
    ids=["missing", "changed-parameters"],
)
def test_a_name_that_moved_is_refused_in_one_line_naming_it(alteration, expected):
    body = alteration + "\n" + "try:\n    activate()\nexcept ImportError as err:\n    print(err)\n"
    proc = _late(body)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if "lfkit plugin:" in line]  # one line, all of it
    assert line.startswith("lfkit plugin: LlamaFactory 0.9.5 does not fit the plugin (written for 0.9.5): ")
    assert expected in line
    assert line.endswith("or run stock LlamaFactory without lfkit's keys with LFKIT_DISABLE_PLUGIN=1.")


@pytest.mark.slow
def test_another_llamafactory_version_whose_names_still_fit_is_patched_with_a_warning():
    body = """
    import llamafactory.extras.env as env
    env.VERSION = "0.9.6"
    activate()
    from llamafactory.hparams import parser
    print(sorted(c.__name__ for c in parser._TRAIN_ARGS))
    """
    proc = _late(body)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LfkitFinetuningArguments" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "LlamaFactory 0.9.6 is installed" in line]
    assert warnings == [
        "lfkit plugin: LlamaFactory 0.9.6 is installed, the plugin was written for 0.9.5; every name it "
        "patches has the same parameters, so it proceeds."
    ]


@pytest.mark.slow
def test_every_patch_declares_the_names_it_relies_on_and_they_fit_this_llamafactory():
    """Checked on the unpatched modules (the plugin never activates in this interpreter)."""
    body = """
    import importlib
    from lfkit.plugin.patches import PATCHES
    from lfkit.plugin.patching import check_names
    for fullname, patches in PATCHES.items():
        assert patches and all(p.names for p in patches), fullname
        module = importlib.import_module(fullname)
        assert not getattr(module, "__lfkit_patched__", False)
        check_names(fullname, module, patches)
    print(len(PATCHES), sum(len(p.names) for ps in PATCHES.values() for p in ps))
    """
    proc = _late(body)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules, names = map(int, proc.stdout.strip().splitlines()[-1].split())
    assert modules >= 11 and names >= 19
