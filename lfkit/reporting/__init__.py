"""Results from LlamaFactory output directories: run discovery, verdicts, stage-aware metrics,
settings, a markdown report and plots (``lfkit results report`` / ``plot``, and the one-run
summary the lfkit plugin writes at the end of a run).

Modules: :mod:`.runs` (find and read runs, never raising on damage), :mod:`.stages` (which
stage a run is and what its loss and metrics mean), :mod:`.health` (diverged, unstable,
unfinished) and :mod:`.trends` (the trend of a healthy run), :mod:`.facts` (table values with
their source or the reason they are missing), :mod:`.settings` (what differed between runs),
:mod:`.epochs`, :mod:`.findings`, :mod:`.plots` and :mod:`.report`. The run record the lfkit
plugin writes (``lfkit_run.json``) is read through its schema, :mod:`lfkit.plugin.run_record_schema`.
"""
