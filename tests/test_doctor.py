"""``lfkit doctor``: each check's finding on the environments users have (not its colours)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from lfkit import doctor, model_source
from lfkit.doctor import GpuInfo, Level


@pytest.fixture
def clean_hub_env(monkeypatch, tmp_path):
    for name in (
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "USE_MODELSCOPE_HUB",
        "USE_OPENMIND_HUB",
        "MODELSCOPE_DOMAIN",
        "HF_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture
def local_hub():
    """An HTTP server on 127.0.0.1 standing in for a hub mirror (answers HEAD with 200)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- GPUs -----------------------------------------------------------------------------------
def test_turing_gpu_has_no_bf16_and_is_pointed_at_fp16_recipes():
    (finding,) = doctor.gpu_findings([GpuInfo(0, "NVIDIA GeForce RTX 2080 Ti", 10.75, (7, 5))], "12.8")
    assert finding.level is Level.warn
    assert "RTX 2080 Ti" in finding.summary and "10.8 GiB" in finding.summary and "no bf16" in finding.summary
    assert "fp16" in finding.advice


def test_ampere_and_newer_gpus_are_fine_one_line_each():
    gpus = [GpuInfo(i, "NVIDIA A100-SXM4-80GB", 79.3, (8, 0)) for i in range(2)]
    findings = doctor.gpu_findings(gpus, "12.8")
    assert [f.level for f in findings] == [Level.ok, Level.ok]
    assert [f.summary.split(":")[0] for f in findings] == ["GPU 0", "GPU 1"]
    assert all("bf16" in f.summary and "no bf16" not in f.summary for f in findings)


def test_no_gpu_says_why(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (hidden,) = doctor.gpu_findings([], "12.8")
    assert hidden.level is Level.warn and "CUDA_VISIBLE_DEVICES" in hidden.summary
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    (cpu_build,) = doctor.gpu_findings([], None)
    assert "CPU-only build" in cpu_build.summary
    (none,) = doctor.gpu_findings([], "12.8")
    assert "sees no CUDA device" in none.summary and "CPU" in none.advice


def test_torch_check_reads_this_environment():
    import torch

    (finding,), gpus, cuda = doctor.torch_findings()
    assert torch.__version__ in finding.summary
    assert cuda == torch.version.cuda
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


# --- LlamaFactory, plugin, optional packages --------------------------------------------------------
def test_llamafactory_version_is_the_one_lfkit_pins():
    import importlib.metadata

    (finding,) = doctor.llamafactory_findings()
    assert finding.level is Level.ok
    pinned = next(r for r in importlib.metadata.requires("lfkit") if r.startswith("llamafactory"))
    assert pinned.split("==")[1] in finding.summary


def test_plugin_hook_is_active_here_and_in_new_interpreters(monkeypatch):
    monkeypatch.delenv("LFKIT_DISABLE_PLUGIN", raising=False)
    (finding,) = doctor.plugin_findings()
    assert finding.level is Level.ok, finding
    assert "new ones" in finding.summary


def test_disabled_plugin_is_a_warning_naming_the_variable(monkeypatch):
    monkeypatch.setenv("LFKIT_DISABLE_PLUGIN", "1")
    (finding,) = doctor.plugin_findings()
    assert finding.level is Level.warn and "LFKIT_DISABLE_PLUGIN" in finding.summary


def test_a_fresh_interpreter_without_site_gets_no_hook():
    """What the doctor's new-interpreter probe distinguishes: python -S skips .pth files."""
    code = "import sys; print(any(type(f).__module__ == 'lfkit.plugin.activate' for f in sys.meta_path))"
    with_site = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    without = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True).stdout
    assert (with_site.strip(), without.strip()) == ("True", "False")
    assert doctor._new_interpreter_has_hook()


def test_optional_packages_report_version_or_how_to_install():
    present = doctor.OptionalPackage("rich", "rich", "tables", "pip install rich")
    absent = doctor.OptionalPackage("no-such-package-lfkit", "x", "the X recipes", "pip install x")
    ok, missing = doctor.optional_findings([present, absent])
    assert ok.level is Level.ok and ok.summary.startswith("rich ")
    assert (
        missing.level is Level.warn
        and "the X recipes" in missing.summary
        and missing.advice == "pip install x"
    )
    topics = {f.topic for f in doctor.optional_findings()}
    assert topics == {"deepspeed", "bitsandbytes", "liger", "ray"}


# --- cache and hub ------------------------------------------------------------------------------
def test_cache_names_its_path_and_free_space(clean_hub_env, tmp_path):
    (finding,) = doctor.cache_findings(model_source.current_hub())
    assert str(tmp_path / "hub-cache") in finding.summary and "not created yet" in finding.summary
    assert "GiB free" in finding.summary


def test_reachable_mirror(clean_hub_env, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub + "/")
    hub = model_source.current_hub()
    assert hub.is_mirror and hub.endpoint == local_hub
    finding = doctor.hub_finding(hub, doctor.probe_endpoint)
    assert finding.level is Level.ok
    assert local_hub in finding.summary and "mirror" in finding.summary and "HTTP 200" in finding.summary


def test_unreachable_hub_is_a_warning_with_the_ways_out(clean_hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    finding = doctor.hub_finding(model_source.current_hub(), doctor.probe_endpoint)
    assert time.monotonic() - start < doctor.HUB_TIMEOUT_S + 1
    assert finding.level is Level.warn and "not reachable" in finding.summary
    assert "HF_HUB_OFFLINE=1" in finding.advice and "HF_ENDPOINT" in finding.advice


def test_probe_gives_up_on_a_silent_server():
    """A server that accepts the connection and never answers: the probe returns within its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        start = time.monotonic()
        result = doctor.probe_endpoint(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - start < 1.5
    assert not result.reachable


def test_offline_mode_is_reported_without_probing(clean_hub_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def must_not_probe(url):
        raise AssertionError("offline mode must not touch the network")

    finding = doctor.hub_finding(model_source.current_hub(), must_not_probe)
    assert finding.level is Level.warn and "HF_HUB_OFFLINE" in finding.summary


def test_modelscope_is_the_hub_when_llamafactory_would_use_it(clean_hub_env, monkeypatch):
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    finding = doctor.hub_finding(model_source.current_hub(), None)
    assert "ModelScope" in finding.summary and "USE_MODELSCOPE_HUB=1" in finding.summary


# --- where a recipe's model comes from (shared with lfkit recipe show) ---------------------------
def test_model_sources(clean_hub_env, monkeypatch, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert model_source.describe(str(model_dir)).startswith("local directory")
    assert "does not exist" in model_source.describe(str(tmp_path / "missing" / "model"))
    assert "not in the cache yet" in model_source.describe("Qwen/Qwen2.5-7B-Instruct")
    snapshot = tmp_path / "hub-cache" / "models--Qwen--Qwen2.5-7B-Instruct" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert "(in the cache)" in model_source.describe("Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "loads from the cache" in model_source.describe("Qwen/Qwen2.5-7B-Instruct")
    assert "cannot load" in model_source.describe("Qwen/Qwen3-8B")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert "the mirror https://hf-mirror.com (HF_ENDPOINT)" in model_source.describe("Qwen/Qwen3-8B")


# --- the command ----------------------------------------------------------------------------------
def test_doctor_command_reports_every_topic(clean_hub_env):
    from typer.testing import CliRunner

    from lfkit.cli import app

    result = CliRunner().invoke(app, ["doctor", "--no-network", "--json"])
    findings = json.loads(result.stdout)
    topics = [f["topic"] for f in findings]
    assert topics[:3] == ["python", "torch", "gpu"]
    expected = {"llamafactory", "plugin", "deepspeed", "bitsandbytes", "liger", "ray", "model-cache", "hub"}
    assert expected <= set(topics)
    assert result.exit_code == (1 if any(f["level"] == "fail" for f in findings) else 0)
    assert all(f["advice"] for f in findings if f["level"] != "ok")
    table = CliRunner().invoke(app, ["doctor", "--no-network"])
    shown = [
        line.split()[1]
        for line in table.stdout.splitlines()
        if line.split()[:1] in (["ok"], ["warn"], ["FAIL"])
    ]
    assert shown == topics
