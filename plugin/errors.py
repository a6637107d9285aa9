"""The refusals of the lfkit plugin: each one a single line that says what to change.

``llamafactory-cli`` (through :mod:`lfkit.plugin.patches`) prints an :class:`LfkitError` as that one
line and exits with status 1, instead of a traceback: these are problems with the recipe, the
machine or the installed LlamaFactory, not bugs to debug.
"""

from __future__ import annotations


class LfkitError(Exception):
    """A refusal whose message is one line saying what is wrong and what to change."""


class ConfigError(LfkitError, ValueError):
    """The recipe cannot run as written on this machine (a key, a dtype, a device, a model path)."""


class LlamaFactoryMismatch(LfkitError, ImportError):
    """The installed LlamaFactory no longer has a name lfkit patches, or its parameters changed."""
