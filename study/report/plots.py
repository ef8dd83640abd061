"""The report's plots: Optuna's for the search history, the Pareto front and the importances; our own for the
per-cycle curves, which no library draws (matplotlib's object-oriented Figure, no pyplot state)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import optuna
import pandas as pd
from matplotlib import colormaps, pyplot
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.importance import FanovaImportanceEvaluator
from optuna.visualization import matplotlib as optuna_plots

from study import tables


def _save_optuna_plot(draw: Callable[[], Axes], path: Path) -> Axes:
    """Optuna's matplotlib plots draw through pyplot and switch to the ggplot style globally: the style stays
    inside this figure, which is closed once saved."""
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axis = draw()
        axis.figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(axis.figure)
    return axis


def plot_history(study: optuna.Study, path: Path) -> None:
    _save_optuna_plot(lambda: optuna_plots.plot_optimization_history(
        study, target_name=f"{study.metric_names[0]} (final cycle, %)"), path)


def plot_importances(study: optuna.Study, path: Path) -> None:
    """One group of bars per objective."""
    _save_optuna_plot(lambda: optuna_plots.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)),
                      path)


def plot_front(study: optuna.Study, marked: pd.DataFrame, labels: dict[str, str], path: Path) -> None:
    """The first two objectives of every finished trial, the front highlighted, the start points starred."""
    def draw() -> Axes:
        x, y = study.metric_names[:2]
        axis = optuna_plots.plot_pareto_front(study, targets=lambda trial: trial.values[:2],
                                              target_names=[f"{x} (final cycle, %)", f"{y} (final cycle, %)"])
        for _, row in marked.iterrows():
            axis.scatter([row[x]], [row[y]], marker="*", s=220, color="tab:blue", zorder=5,
                         label=labels[row["trial"]])
        axis.legend(fontsize=8)
        return axis
    _save_optuna_plot(draw, path)


def trial_label(trials: pd.DataFrame, name: str) -> str:
    row = trials[trials["trial"] == name].iloc[0]
    return f"{row['variant']} ({name})" if isinstance(row["variant"], str) else name


def plot_cycles(cycles: pd.DataFrame, trials: pd.DataFrame, keys: dict[str, str], path: Path) -> None:
    """One row of panels per metric, one column per table direction, one line per trial."""
    columns = [c for c in tables.COLUMNS if (trials["column"] == c).any()] or [None]
    figure = Figure(figsize=(8 * len(columns), 4 * len(keys)), layout="tight")
    axes = figure.subplots(len(keys), len(columns), squeeze=False)
    for row, (key, ylabel) in enumerate(keys.items()):
        for axis, column in zip(axes[row], columns, strict=True):
            names = trials["trial"] if column is None else trials.loc[trials["column"] == column, "trial"]
            colours = colormaps["tab10" if len(names) <= 10 else "tab20"]
            for index, name in enumerate(names):
                history = cycles[cycles["trial"] == name]
                if key in history and history[key].notna().any():
                    axis.plot(history["cycle"], history[key], marker="o", markersize=3,
                              color=colours(index % colours.N), label=trial_label(trials, name))
            axis.set(title=column or "all trials", xlabel="cycle (0 = source-only model)", ylabel=ylabel)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
            if axis.lines and len(axis.lines) <= 20:  # beside the panel, so no line is hidden
                axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(path, dpi=110)
