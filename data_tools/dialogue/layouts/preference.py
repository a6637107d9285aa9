"""Preference and KTO records: refused with what they are, never converted as plain SFT.

LlamaFactory trains DPO / ORPO / SimPO on records with a ``chosen`` and a ``rejected``
response (``ranking: true`` in ``dataset_info.json``; its ``dpo_en_demo`` layout, or Alpaca with
an ``output`` list of two) and KTO on records with a boolean tag (its ``kto_en_demo``:
``"label": true/false``, registered as ``kto_tag``). Read as SFT dialogue, a preference record
would lose both responses (and keep only its history), and a KTO record with ``label: false``
would teach the model exactly the response it is meant to avoid; both looked like clean
conversions before this check. ``lfkit data convert`` writes SFT datasets, so these records are
rejected (``preference_record``, ``kto_record``) with where LlamaFactory reads them instead.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.core.records import RecordError

# A record with one of these keys is never taken by the fast path: this check decides.
KEYS = frozenset(("chosen", "rejected", "label", "kto_tag"))
_AS_IS = "register the file in dataset_info.json as LlamaFactory's own {what} layout and train it as it is"


def refuse(record: dict[str, Any]) -> None:
    """Raise the reject of a preference or KTO record; return for anything else."""
    if "chosen" in record or "rejected" in record:
        field = "chosen" if "chosen" in record else "rejected"
        raise RecordError(
            "preference_record",
            "a preference record (chosen/rejected responses, for DPO/ORPO/SimPO), not SFT dialogue: "
            + _AS_IS.format(what="ranking: true"),
            field,
        )
    if "output" in record and "instruction" in record and isinstance(record["output"], list):
        raise RecordError(
            "preference_record",
            "an Alpaca 'output' list is a ranking of responses (DPO/ORPO/SimPO), not SFT dialogue: "
            + _AS_IS.format(what="ranking: true"),
            "output",
        )
    for key in ("label", "kto_tag"):
        if isinstance(record.get(key), bool):
            raise RecordError(
                "kto_record",
                f"a KTO record (boolean '{key}': a desirable or undesirable response), not SFT dialogue; "
                "as SFT it would train on the undesirable ones: " + _AS_IS.format(what=f"kto_tag: {key}"),
                key,
            )
