"""Config of lfkit's tiny ChatTS-8B-style model (remote code, loaded with trust_remote_code).

The ChatTS-8B checkpoint's config: a Qwen3 config plus the same ``ts``, ``ts_token_start_index``,
``ts_token_end_index`` and ``ignore_index`` fields as ChatTS-14B's. Written by lfkit.
"""

from transformers import Qwen3Config

from .chatts_timeseries import DEFAULT_TS


class Qwen3TSConfig(Qwen3Config):
    model_type = "qwen3ts"

    def __init__(
        self, ts=None, ts_token_start_index=None, ts_token_end_index=None, ignore_index=-100, **kwargs
    ):
        self.ts = dict(ts or DEFAULT_TS)
        self.ts_token_start_index = ts_token_start_index
        self.ts_token_end_index = ts_token_end_index
        self.ignore_index = ignore_index
        super().__init__(**kwargs)
