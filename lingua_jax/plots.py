"""The paper's figures as PNG files, from plain numpy arrays and labels.

Figures are built with `matplotlib.figure.Figure` (rendered by Agg, no display, no pyplot state), so
nothing stays open after a call; each function writes one PNG atomically and returns its path.
Shapes: N samples, L languages, M layers, K checkpoints or model sizes, R ablation rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from numpy.typing import ArrayLike

from lingua_jax.io import write_atomic

DPI = 150


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG to `path` atomically, then drop its contents; returns the path."""
    try:
        return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        fig.clear()


def _annotate(ax: Axes, image: AxesImage, labels: Sequence[Sequence[str]],
              bold: np.ndarray | None = None) -> None:
    """Write labels[r][c] in cell (r, c) of `image`, white on dark cells and black on light ones;
    cells where bold[r, c] (bool [R, C]) in bold."""
    colours = image.cmap(image.norm(np.asarray(image.get_array())))
    for r, row in enumerate(labels):
        for c, text in enumerate(row):
            luminance = colours[r, c, :3] @ np.array([0.299, 0.587, 0.114])
            weight = "bold" if bold is not None and bold[r, c] else "normal"
            ax.text(c, r, text, ha="center", va="center", fontsize=8, fontweight=weight,
                    color="black" if luminance > 0.5 else "white")


def _language_codes(lang: ArrayLike, languages: Sequence[str]) -> np.ndarray:
    """int [N]: each sample's index into `languages`; `lang` holds those indices or the names."""
    lang = np.asarray(lang)
    if lang.dtype.kind in "iu":
        return lang.astype(np.int64)
    index = {name: i for i, name in enumerate(languages)}
    return np.array([index[str(name)] for name in lang], np.int64)


def similarity_heatmap(sim: ArrayLike, lang: ArrayLike, languages: Sequence[str], path: str | os.PathLike,
                       title: str = "Similarity map") -> Path:
    """Fig. 2: the similarity map S [N, N], samples grouped by language (lang [N]: indices into
    `languages`, or names; the order inside a language is kept), block edges drawn, each block
    labelled with its language on both axes."""
    codes = _language_codes(lang, languages)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=len(languages))
    edges = np.cumsum(sizes)
    present = sizes > 0
    centres = (edges - sizes / 2.0 - 0.5)[present]
    names = [name for name, keep in zip(languages, present) if keep]

    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.asarray(sim)[order][:, order], cmap="viridis", interpolation="nearest")
    for edge in edges[:-1][present[:-1]]:
        ax.axhline(edge - 0.5, color="white", linewidth=0.6)
        ax.axvline(edge - 0.5, color="white", linewidth=0.6)
    ax.set_xticks(centres, names)
    ax.set_yticks(centres, names)
    ax.tick_params(length=0)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    return save_figure(fig, path)


def block_heatmap(blocks: ArrayLike, languages: Sequence[str], path: str | os.PathLike,
                  title: str = "Mean similarity between languages") -> Path:
    """The mean similarity between languages, blocks [L, L] (row and column l: languages[l]),
    each cell annotated with its value."""
    blocks = np.asarray(blocks, np.float64)
    fig = Figure(figsize=(1.0 + 0.6 * len(languages), 0.6 + 0.6 * len(languages)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(blocks, cmap="viridis")
    _annotate(ax, image, [[f"{v:.2f}" for v in row] for row in blocks])
    ticks = np.arange(len(languages))
    ax.set_xticks(ticks, languages)
    ax.set_yticks(ticks, languages)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="mean cosine similarity")
    return save_figure(fig, path)


def layerwise_scores(lrds: ArrayLike, sads: ArrayLike, path: str | os.PathLike,
                     title: str = "Layer-wise LRDS and SADS", lrds_interval: ArrayLike | None = None,
                     sads_interval: ArrayLike | None = None) -> Path:
    """Fig. 3: LRDS [M] and SADS [M] of each layer (x = layer 1..M), one panel each; with intervals
    ([2, M]: low, high) as error bars."""
    lrds, sads = np.asarray(lrds), np.asarray(sads)
    layers = np.arange(1, len(lrds) + 1)
    fig = Figure(figsize=(7, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, values, interval, color in ((top, lrds, lrds_interval, "tab:red"),
                                        (bottom, sads, sads_interval, "tab:blue")):
        errors = None if interval is None else np.abs(np.asarray(interval) - values)
        ax.errorbar(layers, values, yerr=errors, fmt="o-", color=color, capsize=3)
    top.set(ylabel="LRDS", title="LRDS (lower: more language-agnostic)")
    bottom.set(ylabel="SADS", title="SADS (higher: more semantic alignment)", xlabel="layer")
    bottom.xaxis.get_major_locator().set_params(integer=True)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def key_neurons_per_layer(counts: ArrayLike, languages: Sequence[str], path: str | os.PathLike,
                          total_per_layer: int | None = None, title: str = "Key neurons") -> Path:
    """Fig. 5-6: key neurons of each language per layer, counts int [L, M] (left: one line per
    language, x = layer 1..M) and in all layers (right: one bar per language). With
    `total_per_layer` (F) both are shown as % of the layer's F (left) and of all M·F neurons (right)."""
    counts = np.asarray(counts, np.float64)
    per_layer, overall, unit = counts, counts.sum(axis=1), "key neurons"
    if total_per_layer:
        per_layer = 100.0 * counts / total_per_layer
        overall = 100.0 * overall / (total_per_layer * counts.shape[1])
        unit = "% key neurons"
    layers = np.arange(1, counts.shape[1] + 1)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    lines, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    colours = [f"C{i % 10}" for i in range(len(languages))]
    for name, values, colour in zip(languages, per_layer, colours):
        lines.plot(layers, values, "o-", markersize=3, label=name, color=colour)
    lines.set(xlabel="layer", ylabel=f"{unit} (of the layer)" if total_per_layer else unit,
              title=f"{title} per layer")
    lines.xaxis.get_major_locator().set_params(integer=True)
    lines.grid(alpha=0.3)
    lines.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bars.bar(languages, overall, color=colours)
    bars.set(ylabel=f"{unit} (of all)" if total_per_layer else unit, title=f"{title} per language")
    bars.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def evolution(steps_or_sizes: ArrayLike, values: Mapping[str, ArrayLike], path: str | os.PathLike,
              xlabel: str, log_x: bool = False, tick_labels: Sequence[str] | None = None,
              title: str | None = None, bands: Mapping[str, ArrayLike] | None = None) -> Path:
    """Fig. 4 / 7: each metric of `values` (name -> [K], NaN where not measured) against the K
    training steps or model sizes, one panel per metric; `bands` (name -> [2, K]: low, high) shade
    intervals. `log_x` for sizes; `tick_labels` [K] names the x positions (e.g. "560m", "1b1")."""
    x = np.asarray(steps_or_sizes, np.float64)
    columns = min(len(values), 4)
    rows = -(-len(values) // columns)
    fig = Figure(figsize=(3.6 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, (name, ys) in zip(axes, values.items()):
        ax.plot(x, np.asarray(ys, np.float64), "o-")
        if bands and name in bands:
            low, high = np.asarray(bands[name], np.float64)
            ax.fill_between(x, low, high, alpha=0.25, label="95% interval")
        ax.set(title=name, xlabel=xlabel, xscale="log" if log_x else "linear")
        if tick_labels is not None:
            ax.set_xticks(x, tick_labels, rotation=45, ha="right")
            ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in axes[len(values):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def layer_distribution_over_checkpoints(labels: Sequence[str], counts: ArrayLike, path: str | os.PathLike,
                                        title: str = "Key neurons across layers") -> Path:
    """Fig. 5: where the key neurons lie, counts int [K, M] (all languages together) of K checkpoints
    (`labels`, one row each) over M layers, each row as % of that checkpoint's key neurons."""
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = 100.0 * counts / np.where(totals > 0, totals, 1.0)
    size = (min(14.0, 3.0 + 0.3 * counts.shape[1]), 1.2 + 0.4 * len(labels))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(0.5, counts.shape[1] + 0.5, len(labels) - 0.5, -0.5))
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="layer", title=title)
    fig.colorbar(image, ax=ax, label="% of the checkpoint's key neurons")
    return save_figure(fig, path)


def ablation_heatmap(table_rows: Sequence[Mapping[str, Any]], languages: Sequence[str],
                     path: str | os.PathLike, title: str = "Perplexity increase after deactivation") -> Path:
    """Table 1: % perplexity increase, one row per ablation and one column per evaluated language.

    table_rows are `evaluate.AblationTable.records()`: "ablated" names the row (a language's region,
    "random", ...), "increase_<lang>" holds the % increase of language <lang>, and an optional
    "neurons_percent" is added to the row label. A language's own region is in bold. The colour scale
    is symmetric-log (linear within ±10%), so +10% and +1000% both read.
    """
    increase = np.array([[row[f"increase_{name}"] for name in languages] for row in table_rows], np.float64)
    names = [str(row["ablated"]) for row in table_rows]
    labels = [f"{name} ({row['neurons_percent']:.1f}%)" if "neurons_percent" in row else name
              for name, row in zip(names, table_rows)]
    own = np.array([[name == language for language in languages] for name in names])
    limit = max(10.0, float(np.nanmax(np.abs(increase))))

    fig = Figure(figsize=(2.0 + 0.8 * len(languages), 1.0 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(increase, cmap="RdBu_r", aspect="auto",
                      norm=SymLogNorm(linthresh=10.0, vmin=-limit, vmax=limit))
    _annotate(ax, image, [[f"{v:+.1f}%" if abs(v) < 10 else f"{v:+.0f}%" for v in row] for row in increase],
              bold=own)
    ax.set_xticks(np.arange(len(languages)), languages)
    ax.set_yticks(np.arange(len(names)), labels)
    ax.set(xlabel="evaluated language", ylabel="deactivated region (% of neurons)", title=title)
    fig.colorbar(image, ax=ax, label="% perplexity increase")
    return save_figure(fig, path)


def method_comparison(summary: Sequence[Mapping[str, Any]], path: str | os.PathLike, budget: int, total: int
                      ) -> Path:
    """The method shoot-out: for each method (x) at its own size (left) and at `budget` neurons per
    language (right), the mean % perplexity increase of the language whose set is zeroed and of the
    other languages (bars, symmetric-log scale); above the bars its selectivity, mean set size and
    steering success. summary rows: {"method", "size" ("own" | "budget"), "neurons", "own_increase",
    "other_increase", "selectivity", "steering"}; total = M · F."""
    values = [r[key] for r in summary for key in ("own_increase", "other_increase")]
    low, high = min(values), max(values)
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, size, title in zip(axes, ("own", "budget"),
                               ("each method's own selection", f"{budget} neurons per language "
                                                               f"({100 * budget / total:.2g}%)")):
        rows = [r for r in summary if r["size"] == size]
        x = np.arange(len(rows))
        for offset, key, label in ((-0.2, "own_increase", "own language"), (0.2, "other_increase", "other languages")):
            ax.bar(x + offset, [r[key] for r in rows], width=0.4, label=label)
        for i, r in enumerate(rows):
            ax.annotate(f"×{r['selectivity']:.2f}\n{r['neurons']:.0f} n.\nsteers {100 * r['steering']:.0f}%",
                        (i, max(r["own_increase"], 0.0)),
                        textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
        ax.set_yscale("symlog", linthresh=10.0)
        ax.set_ylim(min(-1.0, 1.5 * low), 3.0 * max(10.0, high))
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xticks(x, [r["method"] for r in rows])
        ax.set(title=title, xlabel="method")
    axes[0].set_ylabel("mean % perplexity increase")
    axes[0].legend(fontsize=8)
    fig.suptitle("Zeroing each language's neurons, by method (above the bars: selectivity, mean neurons, "
                 "steering success)")
    return save_figure(fig, path)


def steering_curves(curves: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | os.PathLike) -> Path:
    """Steering: the share of continuations in the target language (y) against the strength (x), one line
    per "<statistic>, <set>" of `curves` ({name: {strength: {"share": ...}}}, as the steer stage writes
    them), the unsteered share dashed."""
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name, by_strength in curves.items():
        x = [float(k) for k in by_strength]
        y = [cell["share"] for cell in by_strength.values()]
        if name == "unsteered":
            ax.plot(x, y, linestyle="--", color="grey", label=name)
        else:
            ax.plot(x, y, marker="o", linestyle=":" if name.endswith("random") else "-", label=name)
    ax.set_xscale("log", base=2)
    strengths = sorted({float(k) for by_strength in curves.values() for k in by_strength})
    ax.set_xticks(strengths, [f"{k:g}" for k in strengths])
    ax.set_ylim(-0.02, 1.02)
    ax.set(xlabel="strength (× the target language's typical activation)",
           ylabel="share in the target language", title="Steering with language neurons")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
