"""Config of lfkit's tiny ChatTS-14B-style model (remote code, loaded with trust_remote_code).

Like ChatTS-14B's ``configuration_qwen2.py`` it is a transformers-4-style ``PretrainedConfig``
subclass that stores every Qwen2 field itself (``rope_theta`` included, which transformers 5's
own Qwen2 config no longer has), plus ``ts`` (the encoder's ``patch_size``, ``num_features``
= 2 for value+mask, ``hidden_size``, ``num_layers``, ``max_sequence_length``,
``use_position_embedding``, ``embedding_dim``), the token ids of ``<ts>`` / ``<ts/>`` in
``ts_token_start_index`` / ``ts_token_end_index``, and ``ignore_index``. Written by lfkit.
"""

from transformers import PretrainedConfig

from .chatts_timeseries import DEFAULT_TS


class Qwen2TSConfig(PretrainedConfig):
    model_type = "chatts"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=22016,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        attention_dropout=0.0,
        ts=None,
        ts_token_start_index=None,
        ts_token_end_index=None,
        ignore_index=-100,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = (
            num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        )
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.attention_dropout = attention_dropout
        self.ts = dict(ts or DEFAULT_TS)
        self.ts_token_start_index = ts_token_start_index
        self.ts_token_end_index = ts_token_end_index
        self.ignore_index = ignore_index
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
