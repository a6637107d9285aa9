"""ChatTS time-series data: :mod:`.records` (validation), :mod:`.budget` (sequence length),
:mod:`.chatts` (the processor's arithmetic), :mod:`.text` (the text form), :mod:`.convert`
(the pass and its outputs), :mod:`.cli`."""
