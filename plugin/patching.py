"""How a patch declares what it relies on in LlamaFactory, and the checks and rebinding that use it.

A :class:`Patch` is a function applied to one LlamaFactory module right after that module executes
(:mod:`lfkit.plugin.activate`), together with the :class:`Name` of everything it relies on there:
each module attribute (or class attribute, dotted) it replaces, wraps, subclasses or calls, with the
parameters lfkit was written against. Before a module's patches run, :func:`check_names` verifies
each declared name's presence and parameters and refuses with one line naming what moved
(:class:`~lfkit.plugin.errors.LlamaFactoryMismatch`); a LlamaFactory version other than the one the
table was written for only logs a warning, since what matters is whether the names still fit.

Where a name is used: ``from .converter import align_dataset`` gives ``data/loader.py`` its own
reference to the original. A patch applied when the module executes comes before any such import,
but a module imported before the hook (``lfkit train`` after the caller's own LlamaFactory imports)
would keep the original. So every name declared ``rebind_importers=True`` that a patch replaced is
also replaced, by :func:`rebind_importers`, in every loaded LlamaFactory module that holds the
original object, whatever name it was imported under.

This module stays import-light (the hook imports it at the first LlamaFactory import).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import ModuleType

LLAMAFACTORY_VERSION = "0.9.5"  # the release every declared Name below was read from
_MISSING = object()


class Name:
    """A LlamaFactory name a patch relies on, in the module the patch is registered for.

    ``path`` is the attribute, dotted for a class attribute (``"DatasetAttr.join"``).
    ``params`` is the callable's full parameter list as lfkit was written against it, in order, with
    ``*args`` / ``**kwargs`` marked (``("self", "model", "inputs", "*args", "**kwargs")``); None checks
    presence only (tables such as ``TEMPLATES``). ``rebind_importers``: the patch replaces this module
    attribute with a new object, and every LlamaFactory module that imported the original must get the
    replacement too (the module defines the name and others use it); False when the patch changes the
    name only where this module uses it (``load_model`` in the sft workflow) or changes it in place.

    A plain slotted class rather than a dataclass or named tuple: the hook builds the table at every
    interpreter start, where ``dataclasses`` would import ``inspect`` and ``namedtuple`` run ``exec``.
    """

    __slots__ = ("path", "params", "rebind_importers")

    def __init__(self, path: str, params: tuple[str, ...] | None = None, rebind_importers: bool = False):
        self.path = path
        self.params = params
        self.rebind_importers = rebind_importers

    def __repr__(self) -> str:
        return f"Name({self.path!r}, {self.params!r}, rebind_importers={self.rebind_importers})"


class Patch:
    """A function that patches one LlamaFactory module, and the :class:`Name` s in it that it relies on.

    ``apply`` takes the module and must be idempotent: ``lfkit train`` may apply it to a module that
    was imported before the hook.
    """

    __slots__ = ("apply", "names")

    def __init__(self, apply: Callable[[ModuleType], None], names: tuple[Name, ...]):
        self.apply = apply
        self.names = names

    def __repr__(self) -> str:
        return f"Patch({self.apply.__qualname__}, {len(self.names)} names)"


def resolve(module: ModuleType, path: str) -> object:
    """The object at ``path`` in ``module`` (dotted for class attributes), or ``_MISSING``."""
    obj: object = module
    for part in path.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            break
    return obj


def parameters(obj: object) -> tuple[str, ...] | None:
    """``obj``'s parameter names in order, ``*args``/``**kwargs`` marked; None if it has no signature."""
    import inspect

    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    marks = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return tuple(marks.get(p.kind, "") + p.name for p in signature.parameters.values())


def check_names(fullname: str, module: ModuleType, patches: Iterable[Patch]) -> None:
    """Refuse, naming each one, the declared names that ``module`` lacks or whose parameters changed."""
    moved = []
    for patch in patches:
        for name in patch.names:
            obj = resolve(module, name.path)
            where = f"{fullname}.{name.path}"
            if obj is _MISSING:
                moved.append(f"{where} is missing")
                continue
            if name.params is None:
                continue
            found = parameters(obj)
            if found != name.params:
                shown = "no signature" if found is None else f"({', '.join(found)})"
                moved.append(f"{where} takes {shown} where lfkit expects ({', '.join(name.params)})")
    if moved:
        from lfkit.plugin.errors import LlamaFactoryMismatch

        raise LlamaFactoryMismatch(
            f"lfkit plugin: LlamaFactory {installed_version()} does not fit the plugin (written for "
            f"{LLAMAFACTORY_VERSION}): {'; '.join(dict.fromkeys(moved))}. Install "
            f"llamafactory=={LLAMAFACTORY_VERSION}, or run stock LlamaFactory without lfkit's keys with "
            "LFKIT_DISABLE_PLUGIN=1."
        )


def installed_version() -> str:
    """LlamaFactory's version as ``llamafactory-cli version`` reports it."""
    env = sys.modules.get("llamafactory.extras.env")
    if env is None:
        import llamafactory.extras.env as env
    return str(getattr(env, "VERSION", "unknown"))


_version_warned = False


def warn_on_other_version() -> None:
    """One warning per process when LlamaFactory is not the version the names were declared from."""
    global _version_warned
    version = installed_version()
    if version != LLAMAFACTORY_VERSION and not _version_warned:
        import logging

        _version_warned = True
        logging.getLogger("lfkit.plugin").warning(
            f"lfkit plugin: LlamaFactory {version} is installed, the plugin was written for "
            f"{LLAMAFACTORY_VERSION}; every name it patches has the same parameters, so it proceeds."
        )


def snapshot(module: ModuleType, patches: Iterable[Patch]) -> dict[str, object]:
    """The current objects of the names that must be rebound where imported, before the patches run."""
    return {n.path: resolve(module, n.path) for p in patches for n in p.names if n.rebind_importers}


def rebind_importers(fullname: str, module: ModuleType, before: dict[str, object]) -> None:
    """Give every loaded LlamaFactory module that imported an original its replacement."""
    replaced = {}
    for path, old in before.items():
        new = resolve(module, path)
        if old is not _MISSING and new is not old:
            replaced[id(old)] = (old, new)
    if not replaced:
        return
    for name, other in list(sys.modules.items()):
        if other is module or other is None or not name.startswith("llamafactory"):
            continue
        namespace = getattr(other, "__dict__", {})
        for attr, value in list(namespace.items()):
            hit = replaced.get(id(value))
            if hit is not None and hit[0] is value:
                setattr(other, attr, hit[1])
