"""Tables as CSV, JSON and Markdown, written atomically: one writer for every table of a run."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lingua_jax.io import write_atomic


def plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values, mappings as dicts, non-finite floats as None."""
    if isinstance(value, (np.generic, np.ndarray)):
        return plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(value: Any) -> str:
    """One markdown cell: floats to 4 significant digits, missing values as "n/a", "|" escaped."""
    value = plain(value)
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(format_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(format_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def column_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of the rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_table(rows: Sequence[Mapping[str, Any]], directory: str | os.PathLike, name: str,
                metadata: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write `rows` (one dict per row) as <name>.csv, <name>.json ({**metadata, "columns", "rows"}) and
    <name>.md in `directory`, each atomically. Columns: every key in order of first appearance; a row
    without a key leaves the cell empty (CSV), null (JSON) or "n/a" (Markdown). Returns {suffix: path}."""
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    columns = column_order(rows)
    records = [{column: plain(row.get(column)) for column in columns} for row in rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    renders = {
        "csv": text.getvalue(),
        "json": json.dumps({**plain(metadata or {}), "columns": columns, "rows": records}, indent=2) + "\n",
        "md": markdown_table(columns, [[r[c] for c in columns] for r in records]),
    }
    return {suffix: write_atomic(Path(directory) / f"{name}.{suffix}", content)
            for suffix, content in renders.items()}
