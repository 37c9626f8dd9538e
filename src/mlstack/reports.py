"""Plots a person would rather look at than read: a metric per run, and a regressor's predictions.

Figures are built with matplotlib's object API and saved as PNG (rendered by Agg), so nothing needs a
display and no pyplot state is shared with the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 120
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def metric_per_run(values: Mapping[str, float], groups: Mapping[str, str], metric: str, best: str, path: Path) -> Path:
    """Horizontal bars of `metric` per run, lowest first, coloured by group (model family); `best` is outlined."""
    runs = sorted(values, key=values.get)
    palette = dict(zip(dict.fromkeys(groups[run] for run in runs), cycle(COLOURS)))
    figure = Figure(figsize=(9, 0.4 * len(runs) + 1.8), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(runs, [values[run] for run in runs], color=[palette[groups[run]] for run in runs])
    labels = [f"{values[run]:.2f}" + ("  (best)" if run == best else "") for run in runs]
    axes.bar_label(bars, labels=labels, padding=3, fontsize=8)
    bars[runs.index(best)].set(edgecolor="black", linewidth=2)
    axes.invert_yaxis()
    axes.margins(x=0.15)
    axes.set(xlabel=metric, title=f"{metric} per run, lower is better")
    handles = [Patch(color=colour, label=group) for group, colour in palette.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return _save(figure, path)


def predicted_vs_actual(actual: Sequence[float], predicted: Sequence[float], title: str, path: Path) -> Path:
    """Each prediction against its true value, with the line where they are equal."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    figure = Figure(figsize=(6, 6), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.scatter(actual, predicted, s=18, alpha=0.7)
    low, high = min(actual.min(), predicted.min()), max(actual.max(), predicted.max())
    axes.plot([low, high], [low, high], color="grey", linestyle="--", label="predicted = actual")
    axes.set(xlabel="actual", ylabel="predicted", title=title, aspect="equal")
    axes.legend(loc="upper left")
    return _save(figure, path)


def residuals(actual: Sequence[float], predicted: Sequence[float], title: str, path: Path) -> Path:
    """Residuals (actual - predicted) against the prediction, and their distribution."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    errors = actual - predicted
    figure = Figure(figsize=(10, 4.5), dpi=DPI, layout="constrained")
    by_prediction, distribution = figure.subplots(1, 2, width_ratios=[3, 2])
    by_prediction.scatter(predicted, errors, s=18, alpha=0.7)
    by_prediction.axhline(0, color="grey", linestyle="--")
    by_prediction.set(xlabel="predicted", ylabel="actual - predicted", title="residual per prediction")
    distribution.hist(errors, bins=20, color="tab:blue", alpha=0.8)
    distribution.axvline(0, color="grey", linestyle="--")
    distribution.set(xlabel="actual - predicted", ylabel="count", title="distribution")
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
