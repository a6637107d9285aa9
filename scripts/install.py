"""Install lfkit and what it needs into the virtual environment running this script.

Run by scripts/_venv.sh as ``VENV/bin/python scripts/install.py``. Three things it does that a
plain ``pip install .`` does not:

* **Nothing twice.** A stamp in the environment (``.lfkit-install-stamp.json``) holds a hash
  of what the install depends on. Dependencies are installed again only when the requirement
  lists in ``pyproject.toml`` or ``scripts/constraints.txt`` changed, lfkit itself only when
  ``pyproject.toml`` or a source file under ``lfkit/``, ``plugin/`` or ``data_tools/`` changed;
  otherwise it says so and returns in well under a second.
* **Visible progress.** pip's output is condensed into one line per large download (name and
  size, with the running total) and a line every 30 s while pip is quiet (a large download or
  unpacking torch); the full log is kept in ``VENV/lfkit-pip.log``. Before the first install it
  says how large the download is and why.
* **No moment without lfkit.** pip reinstalls a package by removing the old files first, so
  ``VENV/bin/lfkit`` did not exist for a while and a concurrent ``lfkit`` failed with exit 127.
  Here lfkit's wheel (built by pip) is installed with PyPA's ``installer`` library, writing
  every file through :mod:`lfkit.atomic` (a temporary file renamed over the old one), and
  only then are files of the previous install that the new one lacks removed.

It stays a regular, non-editable install: ``lfkit_plugin.pth`` lands in site-packages, so every
new interpreter (each torchrun rank) loads the plugin, and the tests exercise the wheel.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
STAMP = VENV / ".lfkit-install-stamp.json"
PIP_LOG = VENV / "lfkit-pip.log"
SOURCE_DIRS = ("lfkit", "plugin", "data_tools")
CONSTRAINTS = "scripts/constraints.txt"
QUIET_SECONDS = 30
"""A line is printed when pip has said nothing for this long."""
BIG_MB = 20.0
"""Downloads at least this large get a line of their own; smaller ones are counted."""

# Measured on this project's x86_64 CPU machine (pip 23.2, Python 3.11, fresh environment): the
# wheels pip downloads for `pip install lfkit[dev]` with scripts/constraints.txt, and the size of
# the environment afterwards. Only said before a first install.
FIRST_DOWNLOAD = "about 4.4 GB"
VENV_SIZE = "about 8.3 GB"


def say(message: str) -> None:
    print(f"[lfkit] {message}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


# ---------------------------------------------------------------------------------------------
# what the install depends on
# ---------------------------------------------------------------------------------------------
def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def dependency_hash() -> str:
    """Changes when the declared dependencies, the pins or the interpreter change.

    Only the requirement lists of pyproject.toml count: editing its pytest or ruff settings
    installs nothing.
    """
    digest = hashlib.sha256(json.dumps(requirements()).encode())
    digest.update(_hash_files([REPO / CONSTRAINTS]).encode())
    return digest.hexdigest() + f"-py{sys.version_info[0]}.{sys.version_info[1]}"


def source_hash() -> str:
    """Changes when any file that goes into lfkit's wheel changes (or is added or removed)."""
    files = [REPO / "pyproject.toml"]
    for top in SOURCE_DIRS:
        files += sorted(p for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return _hash_files(files)


def requirements(pyproject: str | None = None) -> list[str]:
    """lfkit's dependencies and dev extra, and the tools this script builds and installs with.

    An extra that names lfkit's own extras (``dev = [..., "lfkit[ray]"]``) is expanded into
    their requirements: pip must not look for lfkit itself on the index.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the TOML parser pip itself ships
        from pip._vendor import tomli as tomllib

    if pyproject is None:
        pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = tomllib.loads(pyproject)
    meta = project["project"]
    extras = meta.get("optional-dependencies", {})
    own = _normalise(meta["name"])

    def expand(reqs: list[str], seen: set[str]) -> list[str]:
        out = []
        for req in reqs:
            match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", req)
            if match and _normalise(match.group(1)) == own:
                for extra in (e.strip() for e in (match.group(2) or "").split(",") if e.strip()):
                    if extra not in seen:
                        out += expand(extras.get(extra, []), seen | {extra})
            else:
                out.append(req)
        return out

    reqs = [
        *expand(meta["dependencies"], set()),
        *expand(extras.get("dev", []), {"dev"}),
        *project["build-system"]["requires"],  # lfkit's wheel is built without build isolation
        "installer>=0.7",  # installs that wheel, see install_lfkit
    ]
    return list(dict.fromkeys(reqs))  # an extra reached twice is asked for once


def _normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------
# pip, with its output condensed
# ---------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(Downloading|Using cached) (\S+) \(([\d.]+) (kB|MB|GB)\)")
_UNIT_MB = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}


class PipProgress:
    """Reads pip's output line by line and prints what a person wants to see of it."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_print = self.started
        self.phase = "resolving dependencies"
        self.downloaded_mb = 0.0
        self.cached_mb = 0.0
        self.small = 0
        self.lock = threading.Lock()

    def _print(self, message: str) -> None:
        with self.lock:
            say(message)
            self.last_print = time.monotonic()

    def line(self, text: str) -> None:
        match = _SIZE.match(text)
        if match:
            how, filename, size, unit = match.groups()
            mb = float(size) * _UNIT_MB[unit]
            if how == "Downloading":
                self.downloaded_mb += mb
            else:
                self.cached_mb += mb
            name = "-".join(filename.split("-")[:2])
            if mb >= BIG_MB and how == "Downloading":
                self.phase = f"downloading {name} ({_mb(mb)})"
            else:
                self.phase = f"collecting packages ({self.small + 1} small ones so far)"
            if mb >= BIG_MB:
                where = "downloading" if how == "Downloading" else "from pip's cache"
                self._print(f"  {name:<40} {_mb(mb):>9}  {where}  (so far {self._total()})")
            else:
                self.small += 1
        elif text.startswith("Installing collected packages:"):
            names = [n.strip() for n in text.split(":", 1)[1].split(",")]
            self.phase = f"installing {len(names)} packages"
            slow = " (unpacking torch and its CUDA libraries takes a few minutes)" if "torch" in names else ""
            self._print(
                f"  {self.small} smaller packages; in all {self._total()}. "
                f"Installing {len(names)} packages{slow}"
            )
        elif text.startswith("Successfully installed"):
            self._print(f"  installed in {_duration(time.monotonic() - self.started)}")

    def _total(self) -> str:
        parts = [f"{_mb(self.downloaded_mb)} downloaded"]
        if self.cached_mb:
            parts.append(f"{_mb(self.cached_mb)} from pip's cache")
        return ", ".join(parts)

    def heartbeat(self, done: threading.Event) -> None:
        while not done.wait(1.0):
            if time.monotonic() - self.last_print >= QUIET_SECONDS:
                self._print(f"  ... {self.phase} ({_duration(time.monotonic() - self.started)} so far)")


def _mb(mb: float) -> str:
    return f"{mb / 1e3:.2f} GB" if mb >= 1e3 else f"{mb:.1f} MB"


def pip(args: list[str], *, progress: bool) -> None:
    """Run pip in this environment; its full output goes to PIP_LOG. Exits with pip's status."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    tracker = PipProgress() if progress else None
    done = threading.Event()
    if tracker:
        threading.Thread(target=tracker.heartbeat, args=(done,), daemon=True).start()
    with open(PIP_LOG, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for text in proc.stdout:
            log.write(text)
            if tracker:
                tracker.line(text)
        status = proc.wait()
    done.set()
    if status != 0:
        lines = PIP_LOG.read_text(encoding="utf-8", errors="replace").splitlines()
        print("\n".join(line for line in lines[-40:] if "is ignored: it is neither" not in line))
        say(f"pip failed (exit status {status}); its full output is in {PIP_LOG}")
        sys.exit(status)


# ---------------------------------------------------------------------------------------------
# the two steps
# ---------------------------------------------------------------------------------------------
def install_dependencies() -> None:
    first = not _installed("torch")
    if first:
        say(
            f"first install: pip downloads {FIRST_DOWNLOAD} of packages and the environment grows to "
            f"{VENV_SIZE}. Most of it is torch: LlamaFactory needs torch, torchvision and torchaudio, "
            "and on Linux the torch on PyPI is the CUDA build, which brings about 3 GB of nvidia-* "
            "CUDA libraries even where there is no GPU. Later runs reuse this environment."
        )
    else:
        say(
            "the requirements in pyproject.toml or scripts/constraints.txt changed: updating the dependencies"
        )
    pip(["install", "-c", str(REPO / CONSTRAINTS), *requirements()], progress=True)


def _installed(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_lfkit() -> None:
    """Build lfkit's wheel and install it over the previous one, file by file, atomically."""
    say("installing lfkit from this checkout (a regular install: the plugin hook comes from the wheel)")
    with tempfile.TemporaryDirectory(prefix="lfkit-wheel-") as tmp:
        pip(["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", tmp, str(REPO)], progress=False)
        (wheel,) = Path(tmp).glob("lfkit-*.whl")
        _install_wheel(wheel)


def _install_wheel(wheel: Path) -> None:
    import sysconfig

    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.records import Hash, RecordEntry
    from installer.sources import WheelFile

    sys.path.insert(0, str(REPO))  # lfkit.atomic, from this checkout
    from lfkit.atomic import atomic_write

    class AtomicDestination(SchemeDictionaryDestination):
        """Each file is written to a temporary file and renamed over the old one."""

        def write_to_fs(self, scheme, path, stream, is_executable):
            target = self._path_with_destdir(scheme, path)
            digest, size = hashlib.new(self.hash_algorithm), 0
            with atomic_write(target) as out:  # keeps an existing file's mode (bin/lfkit stays executable)
                for chunk in iter(lambda: stream.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                if is_executable:
                    os.fchmod(out.fileno(), os.stat(out.fileno()).st_mode | 0o111)
            b64 = base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")  # RECORD's encoding
            return RecordEntry(path, Hash(self.hash_algorithm, b64), size)

    paths = sysconfig.get_paths()
    site = Path(paths["purelib"])
    old_record = _old_record(site)
    destination = AtomicDestination(
        {k: paths[k] for k in ("purelib", "platlib", "scripts", "data")} | {"headers": paths["include"]},
        interpreter=sys.executable,
        script_kind="posix",
        bytecode_optimization_levels=(0,),
        overwrite_existing=True,
    )
    with WheelFile.open(wheel) as source:
        install(source, destination, additional_metadata={"INSTALLER": b"lfkit scripts/install.py\n"})
        new_dist_info = site / f"{source.dist_info_dir}"
    _remove_stale(site, old_record, new_dist_info)


def _old_record(site: Path) -> tuple[Path, set[Path]] | None:
    """The previous install's dist-info directory and the files its RECORD lists."""
    found = sorted(site.glob("lfkit-*.dist-info"))
    if not found:
        return None
    record = found[0] / "RECORD"
    files = set()
    if record.is_file():
        for row in record.read_text(encoding="utf-8").splitlines():
            rel = row.rsplit(",", 2)[0]
            if rel:
                files.add(Path(os.path.normpath(site / rel)))
    return found[0], files


def _remove_stale(site: Path, old: tuple[Path, set[Path]] | None, new_dist_info: Path) -> None:
    """Delete what the previous install had and this one has not (a removed module, say)."""
    if old is None:
        return
    old_dist_info, old_files = old
    new_files = {
        Path(os.path.normpath(site / row.rsplit(",", 2)[0]))
        for row in (new_dist_info / "RECORD").read_text(encoding="utf-8").splitlines()
        if row
    }
    for path in sorted(old_files - new_files):
        if path.suffix == ".pyc" and path.parent.name == "__pycache__":
            source = path.parent.parent / (path.name.split(".")[0] + ".py")
            if source in new_files:
                continue  # bytecode of a module that is still there (recompiled above)
        if path.is_file() or path.is_symlink():
            path.unlink()
    if old_dist_info != new_dist_info and old_dist_info.is_dir():
        shutil.rmtree(old_dist_info)


# ---------------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    """``install.py [--reinstall]``; --reinstall installs lfkit itself again, and nothing else."""
    if "--reinstall" in argv:
        install_lfkit()  # the stamp stays as it is: the next plain run still checks everything
        say(f"lfkit {_installed('lfkit')} reinstalled")
        return
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    deps, source = dependency_hash(), source_hash()
    lfkit_there = (VENV / "bin" / "lfkit").is_file() and _installed("lfkit") is not None
    if lfkit_there and stamp == {"dependencies": deps, "source": source}:
        say(f"lfkit is up to date in {VENV} (pyproject.toml and the sources are unchanged)")
        return
    started = time.monotonic()
    if stamp.get("dependencies") != deps or not _installed("installer"):
        install_dependencies()
    install_lfkit()
    sys.path.insert(0, str(REPO))
    from lfkit.atomic import write_text

    write_text(STAMP, json.dumps({"dependencies": deps, "source": source}))
    say(f"lfkit {_installed('lfkit')} installed in {_duration(time.monotonic() - started)}")


if __name__ == "__main__":
    main(sys.argv[1:])
