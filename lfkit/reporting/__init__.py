"""Results from LlamaFactory output directories: run discovery, per-epoch analysis, trend verdicts,
key findings, a markdown report and loss-curve plots (``lfkit results report`` / ``plot``).

Modules: :mod:`.runs` (find and read runs, never raising on damage), :mod:`.facts` (table
values with their source or the reason they are missing), :mod:`.epochs`, :mod:`.trends`,
:mod:`.findings`, :mod:`.plots` and :mod:`.report`. The run record the lfkit plugin writes
(``lfkit_run.json``) comes from :mod:`lfkit.plugin.run_record`.
"""
