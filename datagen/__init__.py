"""Data generators and importers that write the platform's tables (see docs/data.md)."""

from datagen.summary import DatasetSummary, SynthSummary

__all__ = ["DatasetSummary", "SynthSummary"]
