"""scripts/install.py: reinstalling lfkit never leaves a moment without it, and drops stale files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _install_module():
    spec = importlib.util.spec_from_file_location("lfkit_install_script", REPO / "scripts" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reinstall_keeps_the_command_and_the_hook_in_place_throughout():
    """pip removed the old files before writing the new ones: a concurrent `lfkit` got exit 127."""
    bin_dir = Path(sys.executable).parent
    site = Path(sysconfig.get_paths()["purelib"])
    watched = [
        bin_dir / "lfkit",
        site / "lfkit_plugin.pth",
        site / "lfkit" / "cli.py",
        site / "lfkit" / "__init__.py",
    ]
    assert all(p.is_file() for p in watched), "run this from an environment scripts/install.py set up"
    missing: list[str] = []
    statuses: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            missing.extend(str(p) for p in watched if not p.exists())

    def run_lfkit() -> None:
        while not done.is_set():
            statuses.append(
                subprocess.run([str(bin_dir / "lfkit"), "--version"], capture_output=True).returncode
            )

    threads = [threading.Thread(target=watch), threading.Thread(target=run_lfkit)]
    for t in threads:
        t.start()
    try:
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "install.py"), "--reinstall"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        done.set()
        for t in threads:
            t.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installing lfkit from this checkout" in proc.stdout
    assert not missing, f"missing during the reinstall: {sorted(set(missing))}"
    assert statuses and set(statuses) == {0}
    hook = subprocess.run(
        [sys.executable, "-c", "import sys; print('lfkit.plugin.activate' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert hook.stdout.strip() == "True"


def test_files_the_new_install_lacks_are_removed(tmp_path):
    install = _install_module()
    site = tmp_path / "site-packages"
    old_info = site / "lfkit-0.1.0.dist-info"
    new_info = site / "lfkit-0.2.0.dist-info"
    for rel in (
        "lfkit/kept.py",
        "lfkit/gone.py",
        "lfkit/__pycache__/kept.cpython-311.pyc",
        "lfkit/__pycache__/gone.cpython-311.pyc",
        "lfkit-0.1.0.dist-info/METADATA",
    ):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("x")
    (old_info / "RECORD").write_text(
        "lfkit/kept.py,sha256=a,1\nlfkit/gone.py,sha256=b,1\n"
        "lfkit/__pycache__/kept.cpython-311.pyc,,\nlfkit/__pycache__/gone.cpython-311.pyc,,\n"
        "lfkit-0.1.0.dist-info/METADATA,sha256=c,1\nlfkit-0.1.0.dist-info/RECORD,,\n"
    )
    new_info.mkdir()
    (new_info / "RECORD").write_text("lfkit/kept.py,sha256=a,1\nlfkit-0.2.0.dist-info/RECORD,,\n")
    old = install._old_record(site)
    install._remove_stale(site, old, new_info)
    left = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert left == ["lfkit-0.2.0.dist-info/RECORD", "lfkit/__pycache__/kept.cpython-311.pyc", "lfkit/kept.py"]


def test_source_hash_follows_the_wheel_contents():
    install = _install_module()
    files = {p.relative_to(REPO).parts[0] for p in REPO.joinpath("plugin").rglob("*.py")}
    assert files == {"plugin"}
    assert install.source_hash() == install.source_hash()
    assert install.dependency_hash().endswith(f"-py{sys.version_info[0]}.{sys.version_info[1]}")
    reqs = install.requirements()
    assert any(r.startswith("llamafactory") for r in reqs) and any(r.startswith("hatchling") for r in reqs)


def test_extras_naming_lfkit_itself_are_expanded():
    """main's dev extra says "lfkit[ray]": pip must get ray's requirements, never look for lfkit."""
    install = _install_module()
    pyproject = """
[build-system]
requires = ["hatchling>=1.21"]
[project]
name = "lfkit"
dependencies = ["orjson>=3.9"]
[project.optional-dependencies]
ray = ["ray[default,data]>=2.60,<3"]
extra2 = ["psutil", "LFKit[ray, dev]"]
dev = ["pytest>=8", "lfkit[ray,extra2]"]
"""
    reqs = install.requirements(pyproject)
    assert reqs[:4] == ["orjson>=3.9", "pytest>=8", "ray[default,data]>=2.60,<3", "psutil"]
    assert not any(r.lower().startswith("lfkit") for r in reqs)
    assert len(reqs) == len(set(reqs))
