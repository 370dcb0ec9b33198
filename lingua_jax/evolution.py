"""The analysis over a sweep of checkpoints (training steps) or model sizes (paper Sections 4.4-4.7).

One `pipeline.Analysis` per checkpoint in `<results_dir>/<label>/` (each resumable), one row per
checkpoint with LRDS, SADS, SKLR and XStoryCloze accuracy, plots against step or size (Fig. 4, 7) and
the per-layer key-neuron distribution per checkpoint (Fig. 5). Checkpoints whose weight files are
byte-identical to an earlier one's (this happens in published BLOOM sweeps) are reported as such and
not analysed twice.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from lingua_jax import checkpoints, fingerprints, pipeline, plots
from lingua_jax.io import write_atomic
from lingua_jax.tables import markdown_table, write_table

ROW_STAGES = ("extract", "metrics", "regions", "xstorycloze")


def fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of a checkpoint's weight files (`fingerprints.weight_files`: safetensors, .bin
    and their indexes, or orbax params/), config.json excluded: equal for checkpoints that hold
    identical weights. File hashes are cached, so a sweep re-run does not read the weights again."""
    path = Path(path)
    files = fingerprints.weight_files(path)
    if not files:
        raise FileNotFoundError(f"{str(path)!r} has no weight files to fingerprint")
    return fingerprints.files_fingerprint(path, files)


def sweep(config: ml_collections.ConfigDict, specs: Sequence[str], labels: Sequence[str],
          xs: Sequence[float], results_dir: str | os.PathLike, stages: Sequence[str] = ROW_STAGES,
          xlabel: str = "training step", log_x: bool = False) -> dict[str, Any]:
    """Analyse each checkpoint with `config` (its model path replaced); returns the written files."""
    if not len(specs) == len(labels) == len(xs):
        raise ValueError(f"{len(specs)} checkpoints, {len(labels)} labels and {len(xs)} x values differ")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique: {list(labels)}")
    results = Path(results_dir).expanduser().absolute()
    sources = [checkpoints.resolve_model(spec) for spec in specs]  # local directories or hub_id@revision
    for source in sources:
        checkpoints.load_config(source.path)  # every checkpoint readable before any heavy work
    rows, layer_counts, seen = [], [], {}
    for spec, label, x, source in zip(specs, labels, xs, sources):
        digest = fingerprint(source.path)
        row = {"label": label, "x": x, "checkpoint": spec, "fingerprint": digest[:16], "identical_to": ""}
        if digest in seen:
            earlier = seen[digest]
            logging.warning("%s holds the same weights as %s: not analysed again", label, earlier["label"])
            rows.append({**earlier, **row, "identical_to": earlier["label"]})
            layer_counts.append(layer_counts[rows.index(earlier)])
            continue
        analysis_config = copy.deepcopy(config)
        analysis_config.model.path = str(source.path) if source.hub_id is None else spec
        analysis_config.model.revision = ""
        analysis_config.model.random = ml_collections.ConfigDict()
        analysis_config.results_dir = str(results / label)
        outputs = pipeline.Analysis(analysis_config).run(stages)
        row.update(scores(outputs))
        rows.append(row)
        layer_counts.append(_layer_counts(results / label))
        seen[digest] = row
    return write_outputs(results, rows, layer_counts, xlabel, log_x)


def scores(outputs: dict[str, Any]) -> dict[str, float]:
    """LRDS and SADS (with their 95% bootstrap intervals when measured, NaN otherwise), SKLR and the mean
    unablated XStoryCloze accuracy of one analysis."""
    metrics = outputs["metrics"]
    row = {"lrds": metrics["lrds"], "sads": metrics["sads"], "sklr": outputs["regions"]["sklr"]}
    for name in ("lrds", "sads"):
        row[f"{name}_low"], row[f"{name}_high"] = metrics.get("intervals", {}).get(name, (float("nan"),) * 2)
    cloze = outputs.get("xstorycloze", {}).get("rows")
    row["xstorycloze"] = float(np.mean([r["acc_none"] for r in cloze])) if cloze else float("nan")
    return row


def _layer_counts(results: Path) -> np.ndarray:
    """int [M]: key neurons per layer, summed over languages."""
    rows = json.loads((results / "regions" / "key_neurons_per_layer.json").read_text())["rows"]
    return np.sum([[v for k, v in r.items() if k.startswith("layer_")] for r in rows], axis=0)


def write_outputs(results: Path, rows: list[dict[str, Any]], layer_counts: list[np.ndarray], xlabel: str,
                  log_x: bool) -> dict[str, Any]:
    """evolution.csv/json/md, the metric-vs-x plot, the per-layer distribution plot (when every
    checkpoint has the same layer count) and summary.md listing identical checkpoints."""
    table = write_table(rows, results, "evolution")
    xs = np.array([r["x"] for r in rows], dtype=float)
    def column(name: str) -> np.ndarray:
        return np.array([r[name] for r in rows], dtype=float)

    figures = {"evolution": plots.evolution(
        xs, {k: column(k) for k in ("lrds", "sads", "sklr", "xstorycloze")}, results / "evolution.png", xlabel,
        log_x=log_x, bands={k: [column(f"{k}_low"), column(f"{k}_high")] for k in ("lrds", "sads")})}
    if len({len(c) for c in layer_counts}) == 1:
        figures["layers"] = plots.layer_distribution_over_checkpoints(
            [r["label"] for r in rows], np.stack(layer_counts), results / "key_neurons_per_layer.png")
    identical = [[r["label"], r["identical_to"]] for r in rows if r["identical_to"]]
    lines = ["# Evolution over checkpoints", "",
             markdown_table(["label", xlabel, "LRDS", "LRDS 95% interval", "SADS", "SADS 95% interval", "SKLR",
                             "XStoryCloze"],
                            [[r["label"], r["x"], r["lrds"], _interval(r, "lrds"), r["sads"], _interval(r, "sads"),
                              r["sklr"], r["xstorycloze"]] for r in rows]),
             "## Identical weights", "",
             markdown_table(["checkpoint", "same weights as"], identical) if identical else "none", ""]
    lines += [f"![{name}]({Path(p).name})" for name, p in figures.items()]
    summary = write_atomic(results / "summary.md", "\n".join(lines) + "\n")
    return {"table": table, "figures": figures, "summary": summary, "identical": identical}


def _interval(row: dict[str, Any], name: str) -> str:
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    return "n/a" if np.isnan(low) else f"[{low:.4g}, {high:.4g}]"
