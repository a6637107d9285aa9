"""lfkit.data_tools: convert dialogue and ChatTS time-series JSONL into LlamaFactory datasets.

Shared core (used by every converter): :mod:`~lfkit.data_tools.jsonl` (streaming input and
``RecordError``), :mod:`~lfkit.data_tools.rejects` (the rejects file),
:mod:`~lfkit.atomic` (atomic outputs), :mod:`~lfkit.data_tools.registry`
(``dataset_info.json``), :mod:`~lfkit.data_tools.summary` (accounting and summary table),
:mod:`~lfkit.data_tools.progress` (progress bar). Dialogue: ``dialogue`` (record layouts),
``dialogue_scan`` (the streaming pass), ``sampling`` (per-role draws), ``dialogue_convert``
and ``dialogue_stats``. Time series: ``timeseries*``. Command line: ``cli`` (``lfkit data``).
"""
