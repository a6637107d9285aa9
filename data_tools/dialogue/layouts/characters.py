"""Per-character collections: a directory with one file of conversations per character.

``chars/alice.jsonl``, ``chars/Bob.JSONL``, ``chars/carol.json`` (a JSON array),
``chars/more/dave.jsonl.gz``: every file under the directory is read (see
:func:`lfkit.data_tools.core.inputs.expand_inputs`), its records in any conversation layout
(OpenAI, ShareGPT, PIPPA). The file name without its suffix is the character: it is the
role (the unit of per-role sampling) and the name the model plays. So the system text says
who that is (``You are alice.``, :attr:`~lfkit.data_tools.dialogue.build.Policy.character_intro`)
unless it already names them, and ``{{char}}`` / ``{{user}}`` in the texts are replaced as in
PIPPA. Files of the same name in different subfolders are one character.

Selected by a directory input (or ``--role-from-filename`` for files given one by one); the
records themselves go through their own layout's transform with this context.
"""

from __future__ import annotations

from lfkit.data_tools.core.inputs import file_stem
from lfkit.data_tools.dialogue.build import normalise_role


def character_name(path: str) -> str:
    """The character a file holds: its name without the suffix, whitespace-normalised."""
    return normalise_role(file_stem(path))
