"""Dialogue data: layouts -> one conversation model -> read, draw, convert the picks, write.

:mod:`.model` (the conversation), :mod:`.build` (the rules), :mod:`.layouts` (one transform
per input layout), :mod:`.transform` (the registry, and one record all the way to its rows),
:mod:`.fastpath`, :mod:`.render`; the engine: :mod:`.index` (pass 1: roles and places),
:mod:`.scan` (the full pass), :mod:`.pool` (the records a draw takes from), :mod:`.sampling`
(the per-role draw in rounds, validation, epochs), :mod:`.readback` (pass 2: the picks),
:mod:`.outcomes`, :mod:`.dedup`, :mod:`.convert` (one machine), :mod:`.ray_engine` (a Ray
cluster); :mod:`.stats`, :mod:`.cli`.
"""
