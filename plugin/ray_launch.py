"""Two fixes to LlamaFactory 0.9.5's Ray launcher (``USE_RAY=1``), applied to ``llamafactory.train.tuner``.

**The placement group holds ``ray_num_workers`` bundles.** ``_ray_training_function`` counts the
cluster's devices (``ray.cluster_resources()["GPU"]``, or ``["CPU"]`` on a machine without
accelerators) and builds its placement group with ``get_placement_group(total_devices)``: one
bundle of ``{"CPU": 10, "GPU": 1}`` for every GPU of the cluster, whatever ``ray_num_workers`` says,
although it starts only ``ray_num_workers`` workers in it. The consequences:

* on GPUs, a run reserves the whole cluster (``ray_num_workers: 2`` on a 16-GPU cluster holds all
  16 GPUs and 160 CPUs until it ends), and it waits forever, without a message, when any node has
  fewer than 10 logical CPUs per GPU, because ``ray.get(pg.ready())`` has no timeout;
* on CPUs the group can never be placed: a cluster of N logical CPUs is asked for N bundles of
  10 CPUs, so every CPU-only run hangs at that line (``ray status`` shows the demand
  ``{'CPU': 10.0} * N (PACK)`` pending).

The defect is reported upstream (hiyouga/LlamaFactory issue #10348, open, with fixes proposed in
pull requests #10349 and #10380) and is in 0.9.5, the version lfkit pins. The patch makes the
group exactly ``ray_num_workers`` bundles, the workers LlamaFactory places in it. The rest stays as
LlamaFactory does it: 10 logical CPUs per bundle and per worker (``ray start --num-cpus`` declares
logical CPUs, so a node with fewer cores can still offer them), the PACK strategy, the rank order
(bundles on ``master_addr`` first, then by node IP) and the workers themselves.

**The run record names the recipe.** ``lfkit_run.json`` takes the recipe path from ``sys.argv``,
which in a Ray worker is Ray's worker command. The launcher process puts its own recipe into
:data:`lfkit.plugin.run_record.RECIPE_ENV`; LlamaFactory passes the launcher's whole environment
to every worker (``runtime_env={"env_vars": ...}``), so the workers record the same recipe.
"""

from __future__ import annotations

import json
import os
import sys
from types import ModuleType
from typing import Any


def patch_tuner(module: ModuleType) -> None:
    """Wrap ``module._ray_training_function`` with both fixes (see the module docstring)."""
    launch = module._ray_training_function
    placement_group_for = module.get_placement_group

    def _ray_training_function(ray_args: Any, config: dict[str, Any]) -> None:
        from lfkit.plugin.run_record import RECIPE_ENV, recipe_from_argv

        # LlamaFactory calls get_placement_group(total_devices) from inside the launch, by its
        # module-global name: for the launch's duration that name builds ray_num_workers bundles.
        def get_placement_group(total_devices: int):
            return placement_group_for(ray_args.ray_num_workers)

        exported = os.environ.get(RECIPE_ENV)
        os.environ[RECIPE_ENV] = exported or json.dumps(recipe_from_argv(sys.argv))
        module.get_placement_group = get_placement_group
        try:
            return launch(ray_args, config)
        finally:
            module.get_placement_group = placement_group_for
            if exported is None:
                del os.environ[RECIPE_ENV]

    _ray_training_function.__doc__ = launch.__doc__
    _ray_training_function.__wrapped__ = launch
    module._ray_training_function = _ray_training_function
