"""lfkit.data_tools: convert dialogue and ChatTS time-series records into LlamaFactory datasets.

* :mod:`.core`: what both kinds share: streaming input (JSON Lines, JSON arrays, ``.gz``,
  directories), the record and its rejects, atomic outputs in a work folder, output formats,
  the ``dataset_info.json`` registry, the summary and progress bar;
* :mod:`.dialogue`: conversations: one transform per input layout (:mod:`.dialogue.layouts`)
  into one conversation model, and the engine (scan, deduplicate, sample, write);
* :mod:`.timeseries`: ChatTS records with their series;
* :mod:`.cli`: ``lfkit data convert|stats dialogue|timeseries``.
"""
