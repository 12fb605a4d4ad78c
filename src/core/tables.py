"""Tables for people: GitHub Markdown from a data frame (the reports' format)."""
from __future__ import annotations

import math

import pandas as pd


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs an extra package)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
