"""The report of a run: what produced it (`Provenance`), tables as CSV/JSON/Markdown (`write_table`),
and one summary page (`write_summary`) with the headline numbers, links to every table and every
figure embedded. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lingua_jax.evaluate import RANDOM
from lingua_jax.io import write_atomic
from lingua_jax.lm import LM
from lingua_jax.tables import column_order, format_cell, markdown_table, plain

PACKAGES = ("lingua_jax", "jax", "jaxlib", "flax", "transformers", "numpy")
RANDOM_WEIGHTS_WARNING = (
    "> **Warning: random weights.** This run used a model with random weights. Its numbers only show "
    "that the pipeline works; they say nothing about any trained language model."
)

PathLike = str | os.PathLike


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """{package: installed version, or "not installed"}."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What produced a report: the weights (hub id or model path, the revision asked for and the commit
    it resolved to, dtype, family, M layers of F neurons), the corpus (name, samples per language), the
    seed and z-score threshold, the package versions and the date. `random_weights` marks a model with
    random weights."""

    model: str
    revision: str | None
    commit: str | None
    dtype: str
    family: str
    num_layers: int
    num_neurons: int
    corpus: str
    samples_per_language: Mapping[str, int]
    seed: int
    threshold: float
    random_weights: bool
    versions: Mapping[str, str] = dataclasses.field(default_factory=package_versions)
    date: str = dataclasses.field(default_factory=_now)

    @classmethod
    def from_lm(cls, lm: LM, **fields: Any) -> Provenance:
        """Model fields from an `LM` (its hub id or path, revision, commit and dtype, family, M, F); the
        rest from `fields` (corpus, samples_per_language, seed, threshold, random_weights)."""
        source = lm.source
        return cls(model=str(source.get("hub_id") or source.get("path") or "unknown"),
                   revision=source.get("revision"), commit=source.get("commit"),
                   dtype=str(source.get("dtype", lm.dtype)), family=lm.family, num_layers=lm.num_layers,
                   num_neurons=lm.num_neurons, **fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, in declaration order."""
        return {name: plain(value) for name, value in dataclasses.asdict(self).items()}


# --- headline numbers ------------------------------------------------------------------------------

def ablation_headline(table_rows: Sequence[Mapping[str, Any]], languages: Sequence[str]
                      ) -> dict[str, dict[str, float]]:
    """{region: {"own": % PPL increase of its language, "others (mean)": mean % increase of the other
    languages}} for every row of `evaluate.AblationTable.records()` that zeroes a language's region,
    plus {"random": {"all (mean)": mean % increase of all languages}} when the random row is present."""
    headline = {}
    for row in table_rows:
        name = row["ablated"]
        if name in languages:
            others = [row[f"increase_{other}"] for other in languages if other != name]
            headline[name] = {"own": float(row[f"increase_{name}"]),
                              "others (mean)": float(np.mean(others)) if others else math.nan}
        elif name == RANDOM:
            headline[name] = {"all (mean)": float(np.mean([row[f"increase_{lang}"] for lang in languages]))}
    return headline


def _headline_markdown(headline: Mapping[str, Any]) -> str:
    """Scalars as a list; a mapping as a one-row table keyed by its keys; a mapping of mappings as a
    table with one row per outer key."""
    scalars = [(k, v) for k, v in headline.items() if not isinstance(v, Mapping)]
    parts = ["".join(f"- **{name}**: {format_cell(value)}\n" for name, value in scalars)] if scalars else []
    for name, value in headline.items():
        if not isinstance(value, Mapping):
            continue
        if all(isinstance(v, Mapping) for v in value.values()):
            columns = column_order(list(value.values()))
            rows = [[key, *(inner.get(c) for c in columns)] for key, inner in value.items()]
            parts.append(f"**{name}**\n\n" + markdown_table(["", *columns], rows))
        else:
            parts.append(f"**{name}**\n\n" + markdown_table(list(value), [list(value.values())]))
    return "\n".join(parts)


# --- the summary page ------------------------------------------------------------------------------

def _link(path: PathLike, directory: Path) -> str:
    """`path` relative to `directory`, with "/" separators; FileNotFoundError when it does not exist:
    a summary never links to nothing."""
    path = Path(path)
    if not path.is_absolute():
        path = directory / path
    if not path.is_file():
        raise FileNotFoundError(f"the summary links to {path}, which does not exist")
    return Path(os.path.relpath(path, directory)).as_posix()


def _provenance_markdown(provenance: Provenance) -> str:
    fields = provenance.to_dict()
    for name, separator in (("samples_per_language", ": "), ("versions", " ")):
        fields[name] = ", ".join(f"{k}{separator}{v}" for k, v in fields[name].items())
    return markdown_table(["field", "value"], list(fields.items()))


def _tables_markdown(tables: Mapping[str, PathLike | Mapping[str, PathLike]], directory: Path) -> str:
    """One line per table: a link to its file, or to each of its files ({format: path}, as
    `write_table` returns)."""
    lines = []
    for name, files in tables.items():
        if isinstance(files, Mapping):
            links = " · ".join(f"[{fmt}]({_link(p, directory)})" for fmt, p in files.items())
        else:
            links = f"[{Path(files).name}]({_link(files, directory)})"
        lines.append(f"- **{name}**: {links}\n")
    return "".join(lines)


def write_summary(directory: PathLike, provenance: Provenance, headline: Mapping[str, Any],
                  tables: Mapping[str, PathLike | Mapping[str, PathLike]], figures: Mapping[str, PathLike],
                  notes: str | None = None, title: str = "lingua_jax report") -> Path:
    """Write `directory`/summary.md atomically and return its path.

    The page opens with a warning when `provenance.random_weights`, then lists the provenance, the
    `headline` numbers (name -> scalar, {key: scalar}, or {row: {column: scalar}}, e.g.
    `ablation_headline`), links every table (name -> path, or {format: path}) and embeds every figure
    (name -> PNG path), all by paths relative to `directory`; relative inputs are taken relative to
    `directory`. A missing table or figure file is a FileNotFoundError.
    """
    directory = Path(directory)
    sections = [f"# {title}\n"]
    if provenance.random_weights:
        sections.append(RANDOM_WEIGHTS_WARNING + "\n")
    sections += ["## Provenance\n", _provenance_markdown(provenance), "## Headline numbers\n",
                 _headline_markdown(headline) or "(none)\n"]
    if tables:
        sections += ["## Tables\n", _tables_markdown(tables, directory)]
    if figures:
        sections.append("## Figures\n")
        sections += [f"### {name}\n\n![{name}]({_link(p, directory)})\n" for name, p in figures.items()]
    if notes:
        sections += ["## Notes\n", notes.rstrip() + "\n"]
    return write_atomic(directory / "summary.md", "\n".join(sections))
