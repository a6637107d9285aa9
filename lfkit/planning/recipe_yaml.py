"""Read a recipe's values exactly as ``llamafactory-cli train`` does: with OmegaConf.

PyYAML (YAML 1.1) reads ``2e-4`` as the string "2e-4"; LlamaFactory loads recipes with
OmegaConf, which reads it as a float. Checking or planning with a different loader than the
one that launches the run would judge a different recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_values(path: str | Path) -> dict[str, Any]:
    """The recipe mapping as LlamaFactory's ``read_args`` builds it (before CLI overrides)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(Path(path).absolute()))
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping of keys to values")
    return values
