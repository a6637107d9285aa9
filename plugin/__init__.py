"""The lfkit LlamaFactory plugin (import name ``lfkit.plugin``).

It adds to LlamaFactory what it lacks, without a fork: recipe keys
(:mod:`lfkit.plugin.hparams`), a time-series modality for ChatTS, a separate
learning rate for the time-series encoder, a KL-regularised sft loss and run
records. :mod:`lfkit.plugin.activate` wires it in when ``llamafactory`` is imported.

Kept import-light on purpose: it is imported by a ``.pth`` file at every interpreter start.
"""
