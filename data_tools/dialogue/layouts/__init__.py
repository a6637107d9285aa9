"""One module per dialogue input layout, each a transform from a raw record to a Conversation.

* :mod:`.openai`: ``messages`` of role/content (also LlamaFactory's multimodal demo layout);
* :mod:`.sharegpt`: ``conversations`` of from/value (also its tool-use demo layout);
* :mod:`.pippa`: PygmalionAI's PIPPA role-play records;
* :mod:`.alpaca`: LlamaFactory's default Alpaca format (instruction / input / output / history);
* :mod:`.characters`: directories with one file per character;
* :mod:`.tools` and :mod:`.multimodal`: tool calls and media, inside the layouts above;
* :mod:`.v1_parts`: LlamaFactory v1's ``reasoning`` and ``tool_call`` content parts;
* :mod:`.preference`: preference (DPO) and KTO records, refused before any layout reads them;
* :mod:`.common`: the per-file context, speaker names, roles and turn reading they share.

The registry that picks a layout per record is :mod:`lfkit.data_tools.dialogue.transform`;
a new layout is one new module here and one line there.
"""
