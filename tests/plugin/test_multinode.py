"""Training past one node, launched as the two-node recipes tell users to, on this machine.

* torchrun: ``llamafactory-cli train`` started twice with ``FORCE_TORCHRUN=1 NNODES=2
  NODE_RANK=0|1 MASTER_ADDR MASTER_PORT``, one rank per "node", rendezvous on 127.0.0.1, gloo.
* Ray: ``USE_RAY=1 llamafactory-cli train`` with two workers on a real two-node Ray cluster
  (``ray_cluster`` in ``tests/conftest.py``).

Each run trains a catalog two-node recipe as shipped, on a tiny model, with only the overrides
named next to it. The plugin's keys are in each recipe (``kl_beta``, the ChatTS ``template``,
``timeseries_sft_lr``), and LlamaFactory's own parser rejects a key it does not know, so a rank
that logs ``Process rank: N, world size: 2`` parsed the recipe with the plugin active: that line
is checked for every rank. The collectives the plugin adds (the KL window's gather, the run
record's gather) would hang if a rank lacked it; the run record lists every rank.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, llamafactory_cli, train_env
from local_ray import free_ports

from lfkit.planning.recipe_yaml import load_values
from lfkit.tiny_chatts import build_tiny_chatts

pytestmark = pytest.mark.train

# What a CPU test run changes in a catalog recipe, and why:
CPU_SUBSTITUTES = {
    "bf16": False,  # no bf16/fp16 on the CPU: fp32
    "fp16": False,
    "preprocessing_num_workers": None,  # tokenise in-process (2-core CI)
    "dataloader_num_workers": 0,
    "plot_loss": False,  # the results tooling draws curves; not needed here
    "ddp_backend": "gloo",  # NCCL needs GPUs
    "deepspeed": None,  # DeepSpeed is GPU-only: these runs are plain DDP across the two nodes
}


def _cpu_recipe(name: str, model: Path, output_dir: Path, **overrides) -> dict:
    """The catalog recipe as llamafactory-cli reads it, with the CPU substitutes and ``overrides``.

    ``dataset_dir`` stays relative (``recipes/data``), as shipped: it resolves from the launch
    directory under torchrun and from the nodes' ``ray start`` directory under Ray, both the
    repository root here.
    """
    recipe = load_values(REPO / "recipes" / name)
    recipe.update(CPU_SUBSTITUTES, model_name_or_path=str(model), output_dir=str(output_dir))
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


def _write(recipe: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _trainer_log(output_dir: Path) -> list[dict]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def _assert_run_record(output_dir: Path, recipe_path: Path) -> None:
    record = json.loads((output_dir / "lfkit_run.json").read_text())
    assert record["world_size"] == 2
    assert [d["rank"] for d in record["hardware"]["devices"]] == [0, 1]  # each rank's callback took part
    assert record["recipe"] == {"path": str(recipe_path), "overrides": []}


def _run_two_nodes(recipe_path: Path, logs: Path, timeout: int = 600) -> list[str]:
    """Start ``llamafactory-cli train`` once per node, as the recipe header says; return both logs."""
    port = free_ports(1)[0]
    procs = []
    try:
        for node_rank in (0, 1):
            env = train_env(
                FORCE_TORCHRUN="1",
                NNODES="2",
                NODE_RANK=str(node_rank),
                NPROC_PER_NODE="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
            with (logs / f"node{node_rank}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [llamafactory_cli(), "train", str(recipe_path)],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own group: the launcher, torchrun and the rank
                    )
                )
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    texts = [(logs / f"node{r}.log").read_text(errors="replace") for r in (0, 1)]
    for node_rank, (code, text) in enumerate(zip(codes, texts, strict=True)):
        assert code == 0, f"node {node_rank} failed ({code}):\n{text[-6000:]}"
    return texts


def test_two_node_torchrun_trains_the_qwen3_recipe_with_kl_on_both_nodes(tiny_model, tmp_path):
    recipe = _cpu_recipe(
        "qwen3_30b_roleplay_lora_zero2_2nodes.yaml",
        tiny_model,
        tmp_path / "out",
        max_steps=3,  # scaled down: 3 optimizer steps (24 samples) instead of 2 epochs
        logging_steps=1,
        kl_beta=0.1,  # the plugin's KL loss, so every rank runs plugin code each step
    )
    recipe_path = _write(recipe, tmp_path / "recipe.yaml")
    node0, node1 = _run_two_nodes(recipe_path, tmp_path)

    assert "Multi-node training enabled: num nodes: 2, node rank: 1" in node1
    # each node's rank parsed kl_beta, which LlamaFactory's parser accepts only with the plugin
    assert "Process rank: 0, world size: 2" in node0
    assert "Process rank: 1, world size: 2" in node1

    steps = _trainer_log(tmp_path / "out")
    assert [r["current_steps"] for r in steps] == [1, 2, 3]
    for r in steps:  # averaged over both ranks, the loss is their cross-entropy plus the KL term
        assert r["loss"] == pytest.approx(r["ce_loss"] + 0.1 * r["kl_loss"], rel=1e-3, abs=1e-4)
    assert steps[-1]["kl_loss"] > 0  # the adapters moved away from the reference
    _assert_run_record(tmp_path / "out", recipe_path.resolve())


def _worker_ranks(log: str) -> dict[int, int]:
    """Rank -> pid of the Ray worker that logged ``Process rank: N, world size: 2``."""
    found = re.findall(r"\(Worker pid=(\d+)\).*Process rank: (\d+), world size: 2", log)
    return {int(rank): int(pid) for pid, rank in found}


def test_ray_two_workers_on_two_nodes_train_the_chatts_recipe(ray_cluster, run_train, tmp_path):
    nodes = ray_cluster.alive_nodes()
    # Two nodes of 10 logical CPUs and LlamaFactory's bundles of 10 CPUs: one worker per node.
    assert sorted(n["Resources"]["CPU"] for n in nodes) == [10.0, 10.0]

    recipe = _cpu_recipe(
        "14b_rtx6000_2nodes.yaml",
        build_tiny_chatts(tmp_path / "model"),
        tmp_path / "out",
        max_steps=3,  # scaled down: 3 optimizer steps instead of 5 epochs
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_strategy="no",
        ray_num_workers=2,  # the recipe's 4 is one per GPU of two 2-GPU nodes
        ray_init_kwargs={"address": ray_cluster.address},  # this test's cluster, not the machine's default
    )
    # Ray merges identical lines of different workers; both ranks' lines are wanted here.
    run = run_train(recipe, env={"USE_RAY": "1", "RAY_DEDUP_LOGS": "0"}, timeout=600).check()

    # the plugin's fix: a placement group of ray_num_workers bundles (0.9.5 asks for one per CPU here)
    assert "Create placement group with 2 bundles: {'CPU': 10}" in run.log
    ranks = _worker_ranks(run.log)
    assert sorted(ranks) == [0, 1] and ranks[0] != ranks[1], run.log[-6000:]

    groups = json.loads((run.output_dir / "lfkit_param_groups.json").read_text())["groups"]
    ts_lrs = [g["lr"] for g in groups if g["group"].startswith("timeseries")]
    assert ts_lrs and ts_lrs == pytest.approx([1.0e-4] * len(ts_lrs), rel=1e-9)  # LoRA+ ratio arithmetic
    steps = _trainer_log(run.output_dir)
    assert [r["current_steps"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in steps)
    (recipe_path,) = tmp_path.glob("recipe_*.yaml")  # where run_train wrote the recipe
    _assert_run_record(run.output_dir, recipe_path.resolve())
