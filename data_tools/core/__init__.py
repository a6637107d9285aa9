"""Shared core of the data tools: inputs, records, rejects, work folder, outputs, registry, summary."""
