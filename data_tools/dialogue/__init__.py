"""Dialogue data: layouts -> one conversation model -> scan, deduplicate, sample, write.

:mod:`.model` (the conversation), :mod:`.build` (the rules), :mod:`.layouts` (one transform
per input layout), :mod:`.transform` (the registry), :mod:`.fastpath`, :mod:`.render`,
:mod:`.scan`, :mod:`.dedup`, :mod:`.sampling`, :mod:`.convert`, :mod:`.stats`, :mod:`.cli`.
"""
