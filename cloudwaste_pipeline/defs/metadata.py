"""Metadata helpers: previews small enough for the UI, numbers the UI can plot."""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 20


def preview(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> dg.MetadataValue:
    """A markdown table of at most 20 rows: larger metadata makes the UI slow."""
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    shown = frame[list(columns)] if columns is not None else frame
    return dg.MetadataValue.md(shown.head(PREVIEW_ROWS).to_markdown(index=False))


def counts_table(counts: dict[str, Any], key: str, value: str) -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("_none_")
    lines = [f"| {key} | {value} |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items())]
    return dg.MetadataValue.md("\n".join(lines))
