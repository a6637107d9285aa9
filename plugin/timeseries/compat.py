"""Make the published ChatTS checkpoints' remote code work on transformers 5.

ChatTS-14B (``modeling_qwen2.py``) and ChatTS-8B (``modeling_qwen3_ts.py``) ship remote code
written for transformers 4. On transformers 5.6 (what LlamaFactory 0.9.5 brings) it loads, but:

* ``rotary``: ChatTS-14B's own ``Qwen2RotaryEmbedding`` keeps ``inv_freq``, ``cos_cached`` and
  ``sin_cached`` as non-persistent buffers filled in ``__init__``. transformers 5 builds the
  model on the meta device and only initialises what its own ``_init_weights`` knows, so these
  buffers hold whatever memory they got: the loss is NaN from the first step. Fix: rebuild
  them after load with the module's own constructor (the 4.x values exactly).
* ``tied_weights``: ``_tied_weights_keys`` is a list; transformers 5 expects a
  ``{target: source}`` dict, so ``save_pretrained`` (the end of every full fine-tune) fails
  with ``'list' object has no attribute 'keys'``. Fix: the equivalent dict
  (``{"lm_head.weight": "model.embed_tokens.weight"}``).
* ``cache_api``: the code calls the transformers-4 cache API (``Cache.seen_tokens``,
  ``get_usable_length``, ``get_max_length``, ``DynamicCache.from_legacy_cache`` /
  ``to_legacy_cache``), gone in 5: generation fails on ``seen_tokens``, a cached forward on
  the others. Fix: :class:`ChatTSCache`, transformers 5's ``DynamicCache`` plus those methods
  with their 4.x meaning, used for the caches this model sees.
* ``generation``: transformers 5 tracks ``position_ids`` on the un-merged prompt and no longer
  keeps ``cache_position`` in the generation kwargs; the 14B code's own plumbing then feeds
  stale positions (or merges the series a second time against the already-grown mask) and
  the 8B code decodes with positions that ignore the series expansion. Fix:
  :mod:`lfkit.plugin.timeseries.generation`, series-aware generation plumbing.

Recognition is by class and config, never by path (:func:`is_chatts_remote_code`). Each fix
first looks for the pattern it repairs: absent, it does nothing (a later ChatTS release may
have fixed it); present, it checks that everything it relies on is still where it expects,
and otherwise refuses with one line naming what moved (:class:`ChatTSCompatError`) rather
than guess. Each fix applied is logged once per process.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

FIXES = ("rotary", "tied_weights", "cache_api", "generation")
MERGE_METHOD = "_merge_input_ids_with_time_series_features"
LEGACY_CACHE_NAMES = (
    "seen_tokens",
    "get_usable_length",
    "get_max_length",
    "from_legacy_cache",
    "to_legacy_cache",
)
_ROTARY_BUFFERS = ("inv_freq", "cos_cached", "sin_cached")
_logged: set[str] = set()


class ChatTSCompatError(RuntimeError):
    """A ChatTS compatibility fix no longer matches the checkpoint's remote code."""


def refuse(fix: str, what: str) -> ChatTSCompatError:
    return ChatTSCompatError(
        f"lfkit cannot apply its transformers-5 fix '{fix}' to this ChatTS checkpoint: {what} "
        "(its remote code differs from the ChatTS code lfkit was written against; see "
        "lfkit/plugin/timeseries/compat.py)."
    )


def log_once(key: str, message: str) -> None:
    if key in _logged:
        return
    _logged.add(key)
    from llamafactory.extras import logging

    logging.get_logger("llamafactory.lfkit.chatts").info_rank0(f"lfkit: ChatTS on transformers 5: {message}")


def _remote_source(model) -> str:
    module = sys.modules.get(type(model).__module__)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return ""


def is_chatts_remote_code(model) -> bool:
    """Whether ``model`` is ChatTS's remote code: a ``ts`` config, a ``ts_encoder`` and its series merge."""
    config = getattr(model, "config", None)
    ts = getattr(config, "ts", None)
    return (
        isinstance(ts, dict)
        and "patch_size" in ts
        and getattr(config, "ts_token_start_index", None) is not None
        and getattr(config, "ts_token_end_index", None) is not None
        and hasattr(model, "ts_encoder")
        and "timeseries" in inspect.signature(type(model).forward).parameters
    )


# --- rotary ---------------------------------------------------------------------------------


def fix_rotary(model) -> int:
    """Recompute every 4.x-style rotary module's buffers with its own constructor; returns how many."""
    import torch

    modules = [m for m in model.modules() if set(_ROTARY_BUFFERS) <= set(m._buffers)]
    if not modules:
        return 0
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for module in modules:
        cls = type(module)
        params = inspect.signature(cls.__init__).parameters
        missing = [
            n for n in ("dim", "max_position_embeddings", "base") if n not in params or not hasattr(module, n)
        ]
        if missing:
            raise refuse(
                "rotary", f"{cls.__name__} keeps {', '.join(_ROTARY_BUFFERS)} but no longer has {missing}"
            )
        device = module.inv_freq.device
        with torch.device("cpu"):
            fresh = cls(module.dim, max_position_embeddings=module.max_position_embeddings, base=module.base)
        for name in _ROTARY_BUFFERS:
            value = getattr(fresh, name)
            target = torch.float32 if name == "inv_freq" else dtype
            module.register_buffer(name, value.to(device=device, dtype=target), persistent=False)
        module.max_seq_len_cached = fresh.max_seq_len_cached
    log_once(
        "rotary",
        f"rebuilt inv_freq/cos_cached/sin_cached of {len(modules)} {type(modules[0]).__name__} modules "
        "(transformers 5 leaves these non-persistent buffers uninitialised on load).",
    )
    return len(modules)


# --- tied weights ---------------------------------------------------------------------------


def fix_tied_weights(model) -> bool:
    """Give the model transformers 5's ``{target: source}`` form of a 4.x list ``_tied_weights_keys``.

    Set on the instance (which is what transformers reads), so the remote class stays as shipped.
    """
    keys = getattr(model, "_tied_weights_keys", None)
    if not isinstance(keys, (list, tuple)):
        return False
    cls = type(model).__name__
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    source = names.get(id(getattr(model.get_input_embeddings(), "weight", None)))
    if source is None:
        raise refuse("tied_weights", f"{cls}.get_input_embeddings() has no weight among its parameters")
    unknown = [k for k in keys if k not in set(names.values())]
    if unknown:
        raise refuse("tied_weights", f"{cls}._tied_weights_keys names {unknown}, not parameters")
    model._tied_weights_keys = {k: source for k in keys}
    log_once("tied_weights", f"{cls}._tied_weights_keys {list(keys)} -> {model._tied_weights_keys}.")
    return True


# --- cache API ------------------------------------------------------------------------------


def _cache_class():
    from transformers.cache_utils import DynamicCache

    class ChatTSCache(DynamicCache):
        """transformers 5's ``DynamicCache`` plus the 4.x methods ChatTS's remote code calls."""

        @property
        def seen_tokens(self) -> int:  # 4.x: tokens that went through layer 0, i.e. its length
            return self.get_seq_length()

        def get_usable_length(self, new_seq_length: int, layer_idx: int = 0) -> int:
            return self.get_seq_length(layer_idx)  # 4.x: a dynamic cache has no maximum length

        def get_max_length(self):
            return None

        @classmethod
        def from_legacy_cache(cls, past_key_values=None):
            cache = cls()
            for layer, (keys, values) in enumerate(past_key_values or ()):
                cache.update(keys, values, layer)
            return cache

        def to_legacy_cache(self):
            return tuple((layer.keys, layer.values) for layer in self.layers)

    return ChatTSCache


_CHATTS_CACHE = None


def chatts_cache_class():
    """:class:`ChatTSCache` (built once, after transformers is imported)."""
    global _CHATTS_CACHE
    if _CHATTS_CACHE is None:
        _CHATTS_CACHE = _cache_class()
    return _CHATTS_CACHE


def as_chatts_cache(cache):
    """The same cache object, answering the 4.x calls too (a plain ``DynamicCache`` gains the methods)."""
    from transformers.cache_utils import DynamicCache

    if type(cache) is DynamicCache:
        cache.__class__ = chatts_cache_class()  # adds methods only: no state changes
    return cache


def fix_cache_api(model) -> list[str]:
    """Give the remote code the 4.x cache API it calls; returns the names it calls."""
    source = _remote_source(model)
    used = [name for name in LEGACY_CACHE_NAMES if f".{name}" in source]
    if not used:
        return []
    module = sys.modules[type(model).__module__]
    from transformers.cache_utils import DynamicCache

    if any(n in used for n in ("from_legacy_cache", "to_legacy_cache")):
        current = getattr(module, "DynamicCache", None)
        if current is not DynamicCache and current is not chatts_cache_class():
            raise refuse(
                "cache_api",
                f"{module.__name__} calls DynamicCache.from_legacy_cache but no longer "
                "imports transformers' DynamicCache by that name",
            )
        module.DynamicCache = chatts_cache_class()
    original = model.prepare_inputs_for_generation
    if "past_key_values" not in inspect.signature(original).parameters:
        raise refuse(
            "cache_api", f"{type(model).__name__}.prepare_inputs_for_generation takes no past_key_values"
        )

    def prepare_inputs_for_generation(*args, past_key_values=None, **kwargs):
        return original(*args, past_key_values=as_chatts_cache(past_key_values), **kwargs)

    model.prepare_inputs_for_generation = prepare_inputs_for_generation
    model._lfkit_chatts_cache = True
    log_once(
        "cache_api",
        f"the remote code calls the transformers-4 cache API ({', '.join(used)}); "
        "its caches answer those calls now.",
    )
    return used


# --- all of them ----------------------------------------------------------------------------


def _fix_generation(model) -> bool:
    from lfkit.plugin.timeseries.generation import install_series_generation

    return install_series_generation(model)


_APPLY: dict[str, Callable] = {
    "rotary": fix_rotary,
    "tied_weights": fix_tied_weights,
    "cache_api": fix_cache_api,
    "generation": _fix_generation,
}


def apply_chatts_compat(model, fixes: tuple[str, ...] = FIXES) -> dict[str, object]:
    """Apply the named fixes (all by default) to a loaded ChatTS model; returns what each did.

    Call it right after ``from_pretrained`` and before any forward, PEFT wrapping or
    ``generate``; the plugin does so for every model LlamaFactory loads. A model that is not
    ChatTS's remote code is left alone (empty result).
    """
    unknown = set(fixes) - set(FIXES)
    if unknown:
        raise ValueError(f"unknown ChatTS fixes {sorted(unknown)}; choose from {FIXES}")
    if not is_chatts_remote_code(model):
        return {}
    if not callable(getattr(model, MERGE_METHOD, None)):
        raise refuse("generation", f"{type(model).__name__} has no {MERGE_METHOD}")
    return {name: _APPLY[name](model) for name in FIXES if name in fixes}


def patch_model_loader(module) -> None:
    """Apply the fixes to every ChatTS model LlamaFactory loads, right after ``from_pretrained``.

    LlamaFactory's ``load_model`` hands the fresh model to ``patch_model`` first (which already
    reads ``generation_config`` and ``generate``); the fixes go in just before it, so nothing
    of LlamaFactory, PEFT or the Trainer sees the model unfixed.
    """
    if getattr(module, "_lfkit_chatts_compat", False):
        return
    original = module.patch_model

    def patch_model(model, *args, **kwargs):
        from lfkit.plugin.timeseries.spec import is_timeseries_model

        if is_timeseries_model(model):
            apply_chatts_compat(model)
        return original(model, *args, **kwargs)

    module.patch_model = patch_model
    module._lfkit_chatts_compat = True
