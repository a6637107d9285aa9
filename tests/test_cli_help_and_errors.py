"""What every lfkit command shares: help that shows flags as flags, errors as plain sentences."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import typer

from lfkit import cli
from lfkit.cli_errors import plain_message


def _all_commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _all_commands(sub, (*path, name))


def _run(args, capsys) -> tuple[int, str, str]:
    """The lfkit entry point (the console script calls ``app()``) on ``args``."""
    with pytest.raises(SystemExit) as exit_info:
        cli.app(args=args, prog_name="lfkit")
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.setattr(cli, "_debug", False)
    monkeypatch.setenv("COLUMNS", "200")  # one help row per option


def test_no_command_shows_a_flag_as_taking_a_value(capsys):
    """typer 0.29 printed "--strict <bool>" and "--help <bool>"; every lfkit command is checked."""
    root = typer.main.get_command(cli.app)
    checked = 0
    for path, command in _all_commands(root):
        code, out, _ = _run([*path, "--help"], capsys)
        assert code == 0
        assert "<bool>" not in out, f"lfkit {' '.join(path)} --help shows <bool>"
        flags = [p for p in command.params if getattr(p, "is_flag", False) and not p.hidden]
        for flag in flags:
            assert flag.opts[0] in out
        checked += 1
    assert checked > 10


def test_value_options_still_show_their_type(capsys):
    _, out, _ = _run(["tiny-model", "--help"], capsys)
    seed_row = next(line for line in out.splitlines() if "--seed" in line)
    assert "<int>" in seed_row
    help_row = next(line for line in out.splitlines() if "--help" in line)
    assert "<" not in help_row


def test_out_path_that_is_a_file_is_one_sentence_naming_it(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    code, out, err = _run(["tiny-model", str(afile)], capsys)
    assert code == 1
    assert err.startswith("error: ")
    assert str(afile) in err and "already exists" in err and "choose another path" in err
    assert "Errno" not in err and "Traceback" not in err and "FileExistsError" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["dialogue", "timeseries"])
def test_data_convert_out_that_is_a_file_is_one_sentence_naming_it(kind, tmp_path, capsys):
    """The issue's own example: `lfkit data convert ... --out afile` once printed "[Errno 17] ..."."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    sample = {"dialogue": "roleplay_sample.jsonl", "timeseries": "chatts_sample.jsonl"}[kind]
    source = Path(__file__).parents[1] / "data_tools" / "samples" / sample
    code, out, err = _run(["data", "convert", kind, str(source), "--out", str(afile), "--name", "x"], capsys)
    assert code == 1
    assert str(afile) in err and "Errno" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "nothing was written" in err


def test_debug_shows_the_real_exception(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileExistsError):
        cli.app(args=["--debug", "tiny-model", str(afile)], prog_name="lfkit")


def test_debug_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_debug", True)  # what LFKIT_DEBUG=1 sets at import
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileExistsError):
        cli.app(args=["tiny-model", str(afile)], prog_name="lfkit")


def test_usage_errors_stay_usage_errors(capsys):
    code, _, err = _run(["data", "convert", "--no-such-option"], capsys)
    assert code == 2
    assert "No such option" in err


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "in.jsonl"), "'in.jsonl' does not exist"),
        (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "data"), "'data' is a directory"),
        (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "f/x"), "a part of 'f/x' is a file"),
        (
            PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/x"),
            "permission denied for '/root/x'",
        ),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "big.jsonl"), "no space left on the device"),
        (OSError(errno.EIO, os.strerror(errno.EIO), "disk.img"), "'disk.img': input/output error"),
    ],
)
def test_os_errors_become_sentences_with_the_path(exc, expected):
    message = plain_message(exc)
    assert expected in message
    assert "Errno" not in message and str(exc.errno) not in message


def test_os_error_with_its_own_message_keeps_it():
    assert plain_message(FileExistsError("out/ must not exist: it would be replaced")).startswith("out/")


def test_rename_names_both_paths():
    exc = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "a.tmp", None, "b")
    assert "'a.tmp' (to 'b')" in plain_message(exc)


def test_missing_package_says_what_to_install():
    message = plain_message(ModuleNotFoundError("No module named 'deepspeed.ops'", name="deepspeed.ops"))
    assert "pip install deepspeed" in message and "lfkit doctor" in message


def test_unexpected_errors_point_to_debug():
    message = plain_message(ValueError("bad value"))
    assert message.startswith("bad value (ValueError)") and "--debug" in message


def _sharegpt_dataset(dataset_dir) -> None:
    """A small dataset in LlamaFactory's sharegpt layout with a dataset_info.json entry."""
    import json

    rows = [
        {"conversations": [{"from": "human", "value": f"Hello {i}?"}, {"from": "gpt", "value": f"Fine {i}."}]}
        for i in range(8)
    ]
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "chat.json").write_text(json.dumps(rows))
    (dataset_dir / "dataset_info.json").write_text(
        json.dumps({"chat": {"file_name": "chat.json", "formatting": "sharegpt"}})
    )


@pytest.mark.train
def test_lfkit_train_is_quiet_and_keeps_the_log(tiny_model, tmp_path):
    import subprocess
    import sys

    import yaml
    from conftest import tiny_recipe, train_env

    _sharegpt_dataset(tmp_path / "data")
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model, tmp_path / "data", "chat", out)))
    cmd = [sys.executable, "-m", "lfkit.cli", "train", str(recipe), "max_steps=3"]
    proc = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) <= 12, proc.stdout
    assert "3 of 3 steps" in proc.stdout and "train loss" in proc.stdout and "chance level" in proc.stdout
    log = (out / "lfkit_train.log").read_text()
    assert "train_runtime" in log and "train_runtime" not in proc.stdout

    bad = subprocess.run([*cmd, "kl_betta=0.1"], env=train_env(), capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    # the plugin's fail-fast check answers before LlamaFactory starts: one line, on the screen
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "unknown key 'kl_betta'" in bad.stderr and "did you mean 'kl_beta'?" in bad.stderr
    # what only LlamaFactory itself refuses (once it runs) ends with the log that holds its output
    refused = subprocess.run(
        [*cmd, "template=no_such_template"], env=train_env(), capture_output=True, text=True, timeout=600
    )
    assert refused.returncode != 0 and "lfkit_train.log" in refused.stderr
