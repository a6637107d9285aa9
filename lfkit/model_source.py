"""Where a model named in a recipe comes from: a local directory, or which hub and cache.

LlamaFactory 0.9.5 resolves ``model_name_or_path`` this way (``llamafactory.extras.misc.
try_download_model_from_other_hub``, then transformers' ``from_pretrained``): an existing path
is used as it is; otherwise ``USE_MODELSCOPE_HUB=1`` downloads from ModelScope,
``USE_OPENMIND_HUB=1`` from Modelers (openMind), and else the Hugging Face hub is used, at
``HF_ENDPOINT`` when set (a mirror such as hf-mirror.com). ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) forbids every Hugging Face download: the model must then be a local
path or already in the cache. ``lfkit doctor`` and ``lfkit recipe show`` both report this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MODELSCOPE_DEFAULT_DOMAIN = "www.modelscope.cn"


def env_enabled(name: str) -> bool:
    """LlamaFactory's reading of a switch variable (``is_env_enabled``): true, y or 1."""
    return os.environ.get(name, "0").lower() in ("true", "y", "1")


def _hf_offline() -> bool:
    """huggingface_hub's reading of HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")


@dataclass(frozen=True)
class Hub:
    """The hub a model id is fetched from, as the environment of this process selects it."""

    name: str
    """'Hugging Face', 'ModelScope' or 'Modelers (openMind)'."""
    endpoint: str
    """Base URL downloads go to."""
    selected_by: str
    """The environment variable that chose it ('' for the Hugging Face default)."""
    offline: bool
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: Hugging Face downloads are forbidden."""
    cache_dir: str
    """Where downloaded models are kept."""

    @property
    def is_mirror(self) -> bool:
        """A Hugging Face endpoint other than huggingface.co (HF_ENDPOINT)."""
        return self.name == "Hugging Face" and self.endpoint != HF_DEFAULT_ENDPOINT


def current_hub() -> Hub:
    """The hub LlamaFactory would download a model id from in this environment."""
    offline = _hf_offline()
    if env_enabled("USE_MODELSCOPE_HUB"):
        domain = os.environ.get("MODELSCOPE_DOMAIN", MODELSCOPE_DEFAULT_DOMAIN)
        cache = os.environ.get("MODELSCOPE_CACHE") or os.path.expanduser("~/.cache/modelscope/hub")
        return Hub("ModelScope", f"https://{domain}", "USE_MODELSCOPE_HUB", offline, cache)
    if env_enabled("USE_OPENMIND_HUB"):
        cache = os.path.expanduser("~/.cache/openmind/hub")
        return Hub("Modelers (openMind)", "https://modelers.cn", "USE_OPENMIND_HUB", offline, cache)
    endpoint = os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")
    return Hub(
        "Hugging Face",
        endpoint,
        "HF_ENDPOINT" if "HF_ENDPOINT" in os.environ else "",
        offline,
        hf_cache_dir(),
    )


def hf_cache_dir() -> str:
    """huggingface_hub's model cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def hf_cached(model_id: str, cache_dir: str) -> bool:
    """Whether a Hugging Face model id has a snapshot in the cache (``models--ORG--NAME``)."""
    folder = os.path.join(cache_dir, "models--" + model_id.replace("/", "--"), "snapshots")
    return os.path.isdir(folder) and any(os.scandir(folder))


def describe(model: str, base_dir: str = ".") -> str:
    """One sentence: where ``model`` (a recipe's model_name_or_path) will be loaded from."""
    path = model if os.path.isabs(model) else os.path.join(base_dir, model)
    if os.path.isdir(path):
        config = "" if os.path.isfile(os.path.join(path, "config.json")) else " (no config.json in it!)"
        return f"local directory {os.path.abspath(path)}{config}"
    if os.path.exists(path) or model.startswith((".", "/", "~")) or model.count("/") > 1:
        return f"local path {os.path.abspath(path)}, which does not exist"
    hub = current_hub()
    if hub.name != "Hugging Face":
        return f"{hub.name} id, downloaded from {hub.endpoint} ({hub.selected_by}=1) into {hub.cache_dir}"
    cached = hf_cached(model, hub.cache_dir)
    where = "in the cache" if cached else "not in the cache yet"
    if hub.offline:
        verdict = "loads from the cache" if cached else "cannot load: offline mode and not in the cache"
        return f"Hugging Face id, HF_HUB_OFFLINE is set: {verdict} ({hub.cache_dir})"
    mirror = f"the mirror {hub.endpoint} (HF_ENDPOINT)" if hub.is_mirror else hub.endpoint
    return f"Hugging Face id, downloaded from {mirror} into {hub.cache_dir} ({where})"
