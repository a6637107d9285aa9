"""The fast lane (scripts/test.sh --fast = -m "not train and not slow") starts no training process."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Names whose use in a test means it starts a training process or a cluster.
STARTS_TRAINING = ("run_train", "llamafactory_cli", "torchrun", "sample_job.sh", "ray_cluster")


def _marked_train(node: ast.FunctionDef, module_marked: bool) -> bool:
    return module_marked or any("train" in ast.unparse(d) for d in node.decorator_list)


def _mentions_training(node: ast.FunctionDef) -> bool:
    """A training fixture among its arguments, or a training name or command in its code.

    Its docstring does not count (it may mention torchrun without starting one).
    """
    body = node.body[1:] if ast.get_docstring(node) else node.body
    words = [a.arg for a in node.args.args]
    for n in (sub for stmt in body for sub in ast.walk(stmt)):
        if isinstance(n, ast.Name):
            words.append(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            words.append(n.value)
    return any(name in word for word in words for name in STARTS_TRAINING)


def test_every_test_that_starts_training_is_marked_train():
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_marked = any(
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and "train" in ast.unparse(n.value)
            for n in tree.body
        )
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            if _mentions_training(node) and not _marked_train(node, module_marked):
                unmarked.append(f"{path.relative_to(TESTS)}::{node.name}")
    assert not unmarked, f"start training but lack @pytest.mark.train: {unmarked}"
