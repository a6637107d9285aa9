"""lfkit's sft trainer: LlamaFactory's CustomSeq2SeqTrainer plus lfkit's recipe keys.

:mod:`lfkit.plugin.patches` makes LlamaFactory's ``run_sft`` build this class instead of
its own. With no lfkit key set it behaves exactly like the parent class; each lfkit
feature lives in its own module and is wired in here by one short override.
"""

from __future__ import annotations

from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer


class LfkitSeq2SeqTrainer(CustomSeq2SeqTrainer):
    """CustomSeq2SeqTrainer with lfkit's encoder lr groups and KL loss."""

    def __init__(
        self, finetuning_args, processor, model_args=None, gen_kwargs=None, ref_model=None, **kwargs
    ):
        kl_beta = getattr(finetuning_args, "kl_beta", 0.0)
        if kl_beta > 0:  # its reference goes through the parent's ref_model preparation (DeepSpeed, FSDP)
            from lfkit.plugin.kl_loss import check_kl_args
            from lfkit.plugin.kl_reference import load_reference_model

            check_kl_args(finetuning_args, kwargs.get("model"), kwargs.get("args"))
            ref_model = load_reference_model(finetuning_args, model_args)
        super().__init__(
            finetuning_args=finetuning_args,
            processor=processor,
            model_args=model_args,
            gen_kwargs=gen_kwargs,
            ref_model=ref_model,
            **kwargs,
        )
        from lfkit.plugin.optim import check_trainer_supports_timeseries_lr

        check_trainer_supports_timeseries_lr(self)
        self.kl_regulariser = None
        if kl_beta > 0:
            from lfkit.plugin.kl_loss import KLRegulariser
            from lfkit.plugin.kl_reference import Reference

            reference = Reference(self.ref_model, self.accelerator.unwrap_model)
            self.kl_regulariser = KLRegulariser(self, kl_beta, reference)

    def create_optimizer(self):
        """The parent's optimizer plus timeseries_sft_lr groups; writes lfkit_param_groups.json."""
        from lfkit.plugin.optim import apply_timeseries_lr, decay_ids, write_param_groups

        fresh = self.optimizer is None
        optimizer = super().create_optimizer()
        if fresh and optimizer is not None:
            decay = decay_ids(self.model, self.get_decay_parameter_names(self.model))
            lr = self.args.learning_rate
            apply_timeseries_lr(optimizer, self.model, self.finetuning_args, decay, lr)
            if self.is_world_process_zero():
                write_param_groups(
                    self.args.output_dir, optimizer, self.finetuning_args, lr, decay, self.model
                )
        return optimizer

    def compute_loss(self, model, inputs, *args, **kwargs):
        """The parent's loss; with kl_beta > 0 in training, plus kl_beta * KL to the reference model."""
        if self.kl_regulariser is None or not model.training:
            return super().compute_loss(model, inputs, *args, **kwargs)
        return self.kl_regulariser.compute_loss(model, inputs, *args, **kwargs)

    def log(self, logs, *args, **kwargs):
        """The parent's log; with kl_beta > 0, training lines also carry ce_loss and kl_loss."""
        if self.kl_regulariser is not None and "loss" in logs:
            logs.update(self.kl_regulariser.window_logs())
        super().log(logs, *args, **kwargs)
