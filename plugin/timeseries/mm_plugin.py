"""The ``chatts`` multimodal plugin and template: where series meet the chat format.

``TimeSeriesPlugin`` does the two things only the model's processor knows how to do: write the
offset/scaling text in front of each ``<ts><ts/>`` (``expand_timeseries``) and build the
``[series, 2*max_len, 1]`` value+mask tensor (``encode_timeseries``). It delegates both to the
checkpoint's own processor when that is a ChatTS processor (it has ``encode_timeseries``), since
checkpoints differ in the text they were trained with. Without one it uses
:mod:`lfkit.plugin.timeseries.encoding` (the paper-era ``[Value Offset: ..|Value Scaling: ..]``
text), which the data pipeline allows only with ``timeseries_legacy_prompt: true``
(:func:`lfkit.plugin.timeseries.processing.check_processor`). The ``<ts>`` ``<ts/>`` pair stays
two tokens in ``input_ids``: the model's forward replaces it by the patch embeddings.

The ``chatts`` template is Qwen's ChatML with this plugin, as in the ChatTS-Training fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from lfkit.plugin.timeseries import encoding

PLUGIN_NAME = "chatts"
TEMPLATE_NAME = "chatts"


def is_chatts_processor(processor) -> bool:
    return processor is not None and callable(getattr(processor, "encode_timeseries", None))


def _make_plugin_class(base: type) -> type:
    @dataclass
    class TimeSeriesPlugin(base):
        """LlamaFactory mm plugin for ChatTS series (text expansion and tensor encoding)."""

        timeseries_token: str = encoding.PLACEHOLDER

        def expand_timeseries(self, messages, series, processor, where: str):
            """Messages with each ``<ts><ts/>`` preceded by its series' offset/scaling text."""
            out, k = [], 0
            for message in messages:
                content = message["content"]
                n = content.count(encoding.PLACEHOLDER)
                chunk = series[k : k + n]
                if n and is_chatts_processor(processor):
                    content = processor(text=[content], timeseries=chunk, tokenize=False)["text"][0]
                elif n:
                    pieces = content.split(encoding.PLACEHOLDER)
                    content = pieces[0] + "".join(
                        encoding.prompt_text(s) + piece for s, piece in zip(chunk, pieces[1:], strict=True)
                    )
                k += n
                out.append({**message, "content": content})
            if k != len(series):
                raise ValueError(
                    f"{where}: {k} '{encoding.PLACEHOLDER}' placeholders but {len(series)} series."
                )
            return out

        def encode_timeseries(self, series, processor):
            """The batch's ``[series, 2*max_len, 1]`` value+mask tensor."""
            if is_chatts_processor(processor):
                return processor.encode_timeseries(series)
            return encoding.encode_batch(series)

    return TimeSeriesPlugin


def plugin_class():
    """The plugin class (created once LlamaFactory's mm_plugin module exists)."""
    from llamafactory.data import mm_plugin

    return mm_plugin.PLUGINS[PLUGIN_NAME]


def is_timeseries_plugin(plugin) -> bool:
    return plugin is not None and hasattr(plugin, "expand_timeseries") and hasattr(plugin, "timeseries_token")


def patch_mm_plugin(module: ModuleType) -> None:
    """Register the ``chatts`` plugin in LlamaFactory's plugin table."""
    if PLUGIN_NAME not in module.PLUGINS:
        module.PLUGINS[PLUGIN_NAME] = _make_plugin_class(module.BasePlugin)


def patch_template(module: ModuleType) -> None:
    """Register the ``chatts`` template (ChatML, like the ChatTS-Training fork's)."""
    if TEMPLATE_NAME in module.TEMPLATES:
        return
    from llamafactory.data.formatter import FunctionFormatter, StringFormatter, ToolFormatter

    module.register_template(
        name=TEMPLATE_NAME,
        format_user=StringFormatter(
            slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]
        ),
        format_assistant=StringFormatter(slots=["{{content}}<|im_end|>\n"]),
        format_system=StringFormatter(slots=["<|im_start|>system\n{{content}}<|im_end|>\n"]),
        format_function=FunctionFormatter(slots=["{{content}}<|im_end|>\n"], tool_format="qwen"),
        format_observation=StringFormatter(
            slots=[
                "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
            ]
        ),
        format_tools=ToolFormatter(tool_format="qwen"),
        default_system="You are a helpful assistant.",
        stop_words=["<|im_end|>"],
        replace_eos=True,
        mm_plugin=module.get_mm_plugin(PLUGIN_NAME),
    )
