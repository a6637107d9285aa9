"""Recipe checking and planning: keep the catalog in ``recipes/`` honest and say what fits.

* :mod:`lfkit.planning.check` -- ``lfkit recipe check``: LlamaFactory's own parser plus file checks.
* :mod:`lfkit.planning.catalog` -- ``lfkit recipe estimates``: header Estimate lines == the planner.
* :mod:`lfkit.planning.plan` -- ``lfkit plan``: the typed :class:`~lfkit.planning.plan.Plan` (memory,
  host RAM, blockers, time, suggestions, exit status), built from
  :mod:`~lfkit.planning.training_setup` (the recipe values that matter), :mod:`~lfkit.planning.models`
  (shapes), :mod:`~lfkit.planning.gpus` (GPU table, clusters of nodes), :mod:`~lfkit.planning.memory`,
  :mod:`~lfkit.planning.host_memory` and :mod:`~lfkit.planning.throughput` (the estimates),
  :mod:`~lfkit.planning.assess` (one setup judged) and :mod:`~lfkit.planning.suggestions` (recipe
  changes worth making); :mod:`~lfkit.planning.render` prints it.
* :mod:`lfkit.planning.calibration` -- ``lfkit plan calibrate``: the time model fitted to
  :mod:`~lfkit.planning.measurements` (the team's figures, issue figures, recorded GPU runs).
* :mod:`lfkit.planning.units` -- GB (10^9) and GiB (2^30), one spelling everywhere.
"""
