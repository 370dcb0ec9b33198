"""The stages of an analysis, one small module each, and their registry (in running order).

A stage declares the stages whose results it reads and the input artefacts its results depend on
(`context.INPUTS`: the model, the tokenizer, the corpus, the evaluation data); the config fields its
code reads are recorded as it runs (`context.Context`). `pipeline.Analysis` runs them. Adding a stage
is one module here and one line in STAGES.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Outputs = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Contribution:
    """A stage's part of the summary page (its tables and figures come from its outputs)."""

    headline: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()


def no_contribution(outputs: Outputs) -> Contribution:
    return Contribution(notes=tuple(outputs.get("notes", ())))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the analysis.

    `run(context, folder, reads)` writes the stage's files into `folder` and returns its outputs
    (JSON-ready: numbers, notes, and under "tables" / "figures" the paths of the files it wrote), or
    {"skipped": reason} when there is nothing it can do (data absent, method not asked for); `reads`
    maps each stage of `reads` to its outputs. `reads=("*",)` (the report) reads every earlier stage
    that ran in this run or had finished before, and runs none of them itself. `inputs` name the
    artefacts its results depend on (context.INPUTS). `report(outputs)` is its part of the summary
    page (also for a skip); `check(folder)` says why a finished stage's files cannot be trusted
    (None: they can).
    """

    name: str
    reads: tuple[str, ...]
    run: Callable[..., Outputs]
    inputs: tuple[str, ...] = ()
    report: Callable[[Outputs], Contribution] = no_contribution
    check: Callable[[Path], str | None] | None = None


from lingua_jax.stages import (ablation, compare, extract, generation, metrics, regions,  # noqa: E402
                               report, stability, steer, xstorycloze)

STAGES: tuple[Stage, ...] = (extract.STAGE, metrics.STAGE, regions.STAGE, stability.STAGE, ablation.STAGE,
                             xstorycloze.STAGE, generation.STAGE, steer.STAGE, compare.STAGE, report.STAGE)
BY_NAME = {stage.name: stage for stage in STAGES}
NAMES = tuple(BY_NAME)
