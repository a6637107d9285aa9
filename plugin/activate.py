"""Post-import hook that wires the lfkit plugin into LlamaFactory.

``lfkit_plugin.pth`` (placed in site-packages by the wheel) imports this module at every
interpreter start, including each rank that ``torchrun`` spawns. Importing it only puts a
finder on ``sys.meta_path``: nothing of LlamaFactory, torch or transformers is imported
until the program itself imports a module listed in :data:`lfkit.plugin.patches.PATCHES`.
Then that module runs as usual and the patches registered for it are applied right after,
before anyone else sees it: first every LlamaFactory name they rely on is checked (one line
naming what moved, if anything did), then they run, then the names they replaced are rebound in
the LlamaFactory modules that imported the originals (:mod:`lfkit.plugin.patching`).

Set ``LFKIT_DISABLE_PLUGIN=1`` to run stock LlamaFactory (used for baselines).
"""

from __future__ import annotations

# Not importlib.abc: it drags in importlib.resources (tempfile, shutil, pathlib, typing), about
# 20 ms on every interpreter start; the import system only needs these two duck-typed methods.
import importlib.machinery
import os
import sys
from types import ModuleType

DISABLE_ENV = "LFKIT_DISABLE_PLUGIN"


class _PatchingLoader:
    """Wraps a module's real loader and applies lfkit's patches after it executes."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        from lfkit.plugin.patches import apply_patches

        apply_patches(self._fullname, module)

    def __getattr__(self, name):  # get_source, get_code, is_package, ... for tracebacks and tools
        return getattr(self._loader, name)


class _PostImportFinder:
    """Finds the modules lfkit patches and hands back their spec with a patching loader."""

    def __init__(self, targets: frozenset[str]) -> None:
        self._targets = targets

    def find_spec(self, fullname, path, target=None):
        if fullname not in self._targets:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


def hook_installed() -> bool:
    """Whether ``lfkit_plugin.pth`` sits in a site-packages directory of this interpreter.

    Only then does every new Python process (each torchrun rank) load the plugin by itself.
    """
    import site

    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    return any(os.path.isfile(os.path.join(d, "lfkit_plugin.pth")) for d in dirs)


def install() -> bool:
    """Install the hook once per process; returns whether the plugin is active."""
    if os.environ.get(DISABLE_ENV, "").lower() in ("1", "true", "yes"):
        return False
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return True
    from lfkit.plugin.patches import PATCHES, apply_patches

    sys.meta_path.insert(0, _PostImportFinder(frozenset(PATCHES)))
    # A module imported before the hook (``lfkit train`` after a user's own import) is patched now,
    # and the names it replaced are rebound where other LlamaFactory modules imported them.
    for name in PATCHES:
        if name in sys.modules:
            apply_patches(name, sys.modules[name])
    return True


install()
