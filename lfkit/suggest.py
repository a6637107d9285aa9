"""Did-you-mean suggestions for misspelt names (recipe keys, dataset names, templates).

Shared by ``lfkit recipe check`` (:mod:`lfkit.planning.check`) and the plugin's pre-flight check of
``llamafactory-cli train`` (:mod:`lfkit.plugin.preflight`), so both suggest the same name. Only
``difflib``: the plugin imports it in every training process.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'closest'?"`` for the closest of ``choices`` (difflib ratio >= 0.6), else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
