"""Processor of lfkit's tiny ChatTS-8B-style model: the same contract and text as the 14B one."""

from .processing_qwen2_ts import Qwen2TSProcessor


class Qwen3TSProcessor(Qwen2TSProcessor):
    pass
