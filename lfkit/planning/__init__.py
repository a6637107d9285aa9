"""Recipe checking and planning: keep the catalog in ``recipes/`` honest and say what fits.

* :mod:`lfkit.planning.check` -- ``lfkit recipe check``: LlamaFactory's own parser plus file checks.
* :mod:`lfkit.planning.catalog` -- ``lfkit recipe estimates``: header Estimate lines == the planner.
* :mod:`lfkit.planning.plan` -- ``lfkit plan``: memory, time, fit and the team's decision tree, from
  :mod:`~lfkit.planning.models` (shapes), :mod:`~lfkit.planning.gpus` (GPU table),
  :mod:`~lfkit.planning.memory` and :mod:`~lfkit.planning.throughput` (the estimates).
"""
