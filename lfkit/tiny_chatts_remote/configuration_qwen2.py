"""Config of lfkit's tiny ChatTS-compatible model (remote code, loaded with trust_remote_code).

Same fields as a ChatTS checkpoint's config: a Qwen2 config plus ``ts`` (the encoder's
``patch_size``, ``num_features`` = 2 for value+mask, ``hidden_size``, ``num_layers``) and the
token ids of ``<ts>`` / ``<ts/>`` in ``ts_token_start_index`` / ``ts_token_end_index``.
Written by lfkit (not copied from ChatTS); self-contained on purpose.
"""

from transformers import Qwen2Config


class Qwen2TSConfig(Qwen2Config):
    model_type = "chatts"

    def __init__(self, ts=None, ts_token_start_index=None, ts_token_end_index=None, **kwargs):
        self.ts = dict(ts or {"patch_size": 4, "num_features": 2, "hidden_size": 64, "num_layers": 2})
        self.ts_token_start_index = ts_token_start_index
        self.ts_token_end_index = ts_token_end_index
        super().__init__(**kwargs)
