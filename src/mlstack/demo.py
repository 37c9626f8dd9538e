"""`mlstack demo`: the seeds' workflow on scikit-learn's diabetes data (shipped with it: no download),
tracked to every configured backend through `mlstack.tracking.multi`.

prepare (a fixed train/validation/test split, recorded as a data version) -> train each model family
over a small grid, one child run per point, under one parent run -> select the best by validation
RMSE -> evaluate it on the test split -> register it as a new version of `mlstack-demo-diabetes`
with the alias `champion` -> a comparison table, and plots that are run artifacts and files under
reports/demo/.

MLflow: MLFLOW_TRACKING_URI (`make up` writes it to .env, with the client account's credentials);
unset or not answering, the local store in the state folder. ClearML goes offline by itself without
a server or credentials. Each says so once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sklearn.base import RegressorMixin
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from tenacity import stop_after_delay

from mlstack import reports
from mlstack.settings import Settings
from mlstack.tracking.mlflow.config import current_config, setup_mlflow
from mlstack.tracking.mlflow.transport import server_answers
from mlstack.tracking.multi import MultiTracker, configured_backends, track

EXPERIMENT = "mlstack-demo"
MODEL_NAME = "mlstack-demo-diabetes"
ALIAS = "champion"
SELECTION_METRIC = "val_rmse"
RANDOM_STATE = 42
DATA_SOURCE = "https://scikit-learn.org/stable/datasets/toy_dataset.html#diabetes-dataset"


@dataclass(frozen=True)
class Family:
    """A model family: its estimator, the params every run shares, and the grid the runs differ by."""

    name: str
    estimator: type[RegressorMixin]
    fixed: dict[str, Any]
    grid: list[dict[str, Any]]


FAMILIES = (
    Family("ridge", Ridge, {}, [{"alpha": alpha} for alpha in (0.1, 1.0, 10.0)]),
    Family(
        "forest",
        RandomForestRegressor,
        {"n_estimators": 60, "min_samples_leaf": 3, "random_state": RANDOM_STATE, "n_jobs": 1},
        [{"max_depth": depth} for depth in (3, 6, None)],
    ),
    Family(
        "boosting",
        GradientBoostingRegressor,
        {"n_estimators": 80, "subsample": 0.8, "random_state": RANDOM_STATE},
        [{"learning_rate": rate, "max_depth": depth} for rate in (0.05, 0.1) for depth in (2, 3)],
    ),
)


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def labelled(self) -> pd.DataFrame:
        """Every row with the part it belongs to (column `split`): the data version recorded."""
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        return pd.concat([part.assign(split=name) for name, part in parts.items()])


@dataclass
class Candidate:
    """One trained grid point and its validation metrics."""

    run_name: str
    family: str
    params: dict[str, Any]
    model: RegressorMixin
    metrics: dict[str, float]


@dataclass
class DemoResult:
    parent_run_ids: dict[str, str | None]
    candidates: list[Candidate]
    champion: Candidate
    test_metrics: dict[str, float]
    versions: dict[str, str]
    plots: list[Path]
    tracking_uri: str = ""
    failures: list[str] = field(default_factory=list)


def run_demo(settings: Settings, console: Console) -> DemoResult:
    """The whole workflow; see the module docstring. Returns what it made, for callers and tests."""
    backends = configured_backends(settings)
    console.print(f"[bold]mlstack demo[/]: tracking to {', '.join(backends)} (MLSTACK_TRACKERS)")
    with _logs_on(console):
        tracking_uri = setup_mlflow(EXPERIMENT, settings=settings, local_store_reason=_local_store_reason(settings))
        split = _prepare()
        started = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with track(f"demo {started}", EXPERIMENT, {"workflow": "demo"}, settings, backends) as parent:
            result = _run(parent, split, settings.project_dir / "reports" / "demo", console)
        result.tracking_uri = tracking_uri
        result.failures = [str(failure) for failure in parent.failures]
    _print_summary(console, settings, result, parent)
    return result


def _local_store_reason(settings: Settings) -> str | None:
    """Why the configured MLflow server is passed over for the local store (None: use it, or none is set)."""
    uri = settings.mlflow_tracking_uri
    if uri and not server_answers.retry_with(stop=stop_after_delay(3))(uri):
        return f"the MLflow server at {uri} (MLFLOW_TRACKING_URI) does not answer"
    return None


def _prepare() -> Split:
    frame = load_diabetes(as_frame=True).frame
    rest, test = train_test_split(frame, test_size=0.2, random_state=RANDOM_STATE)
    train, validation = train_test_split(rest, test_size=0.25, random_state=RANDOM_STATE)
    return Split(train, validation, test)


def _run(parent: MultiTracker, split: Split, folder: Path, console: Console) -> DemoResult:
    labelled = split.labelled()
    parent.log_dataset(labelled, "diabetes", DATA_SOURCE, context="train/validation/test")
    parent.log_params(
        {
            "dataset": "sklearn diabetes",
            "rows_train": len(split.train),
            "rows_validation": len(split.validation),
            "rows_test": len(split.test),
            "selection_metric": SELECTION_METRIC,
            "random_state": RANDOM_STATE,
        }
    )
    console.print(
        f"[green]✓[/] data: diabetes, {len(labelled)} rows ({len(split.train)} train / "
        f"{len(split.validation)} validation / {len(split.test)} test), recorded as a data version"
    )
    candidates = _train_all(parent, split, console)
    champion = min(candidates, key=lambda candidate: candidate.metrics[SELECTION_METRIC])
    test_x, test_y = _features_and_target(split.test)
    predicted = champion.model.predict(test_x)
    test_metrics = _regression_metrics("test", test_y, predicted)
    console.print(f"[green]✓[/] champion by {SELECTION_METRIC}: {champion.run_name}; evaluated on the test split")
    on_test = (
        f"{champion.run_name} on the test split "
        f"(RMSE {test_metrics['test_rmse']:.1f}, R² {test_metrics['test_r2']:.2f})"
    )

    plots = [
        reports.metric_per_run(
            {c.run_name: c.metrics[SELECTION_METRIC] for c in candidates},
            {c.run_name: c.family for c in candidates},
            SELECTION_METRIC,
            champion.run_name,
            folder / f"{SELECTION_METRIC}_per_run.png",
        ),
        reports.predicted_vs_actual(test_y, predicted, on_test, folder / "champion_predicted_vs_actual.png"),
        reports.residuals(test_y, predicted, on_test, folder / "champion_residuals.png"),
    ]
    comparison = folder / "runs.csv"
    _comparison_frame(candidates).to_csv(comparison, index=False)

    parent.log_params({"champion_run": champion.run_name, "champion_family": champion.family})
    parent.log_metrics({f"champion_{SELECTION_METRIC}": champion.metrics[SELECTION_METRIC], **test_metrics})
    parent.set_tags({"champion": champion.run_name})
    for plot in plots:
        parent.log_artifact(plot, "plots")
    parent.log_artifact(comparison, "reports")
    versions = parent.register_model(
        champion.model,
        MODEL_NAME,
        alias=ALIAS,
        metadata={"run": champion.run_name, **test_metrics},
        input_example=test_x.head(5),
    )
    console.print(f"[green]✓[/] plots saved under {folder} and logged with the parent run; champion registered")
    return DemoResult(parent.run_ids, candidates, champion, test_metrics, versions, plots)


def _train_all(parent: MultiTracker, split: Split, console: Console) -> list[Candidate]:
    points = [(family, point) for family in FAMILIES for point in family.grid]
    candidates = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(points))
        for family, point in points:
            run_name = " ".join([family.name, *(f"{key}={value}" for key, value in point.items())])
            progress.update(task, description=f"training {run_name}")
            candidates.append(_train_one(parent, split, family, point, run_name))
            progress.advance(task)
    console.print(f"[green]✓[/] trained {len(candidates)} models of {len(FAMILIES)} families, one child run each")
    return candidates


def _train_one(parent: MultiTracker, split: Split, family: Family, point: dict, run_name: str) -> Candidate:
    params = {**family.fixed, **point}
    train_x, train_y = _features_and_target(split.train)
    val_x, val_y = _features_and_target(split.validation)
    with parent.child(run_name, tags={"family": family.name}) as child:
        child.log_params({"family": family.name, **params})
        started = time.perf_counter()
        model = family.estimator(**params).fit(train_x, train_y)
        metrics = {
            **_regression_metrics("val", val_y, model.predict(val_x)),
            "train_rmse": root_mean_squared_error(train_y, model.predict(train_x)),
            "fit_seconds": time.perf_counter() - started,
        }
        if hasattr(model, "staged_predict"):  # boosting: the validation curve, one point per stage
            for stage, predicted in enumerate(model.staged_predict(val_x), start=1):
                child.log_metrics({"val_rmse_by_stage": root_mean_squared_error(val_y, predicted)}, step=stage)
        child.log_metrics(metrics)
    return Candidate(run_name, family.name, params, model, metrics)


def _features_and_target(part: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return part.drop(columns="target"), part["target"]


def _regression_metrics(prefix: str, actual, predicted) -> dict[str, float]:
    return {
        f"{prefix}_rmse": float(root_mean_squared_error(actual, predicted)),
        f"{prefix}_mae": float(mean_absolute_error(actual, predicted)),
        f"{prefix}_r2": float(r2_score(actual, predicted)),
    }


def _comparison_frame(candidates: list[Candidate]) -> pd.DataFrame:
    rows = [{"run": c.run_name, "family": c.family, **c.metrics} for c in candidates]
    return pd.DataFrame(rows).sort_values(SELECTION_METRIC)


def _print_summary(console: Console, settings: Settings, result: DemoResult, parent: MultiTracker) -> None:
    table = Table(title=f"{len(result.candidates)} runs, best {SELECTION_METRIC} first", title_justify="left")
    for column in ("run", "val RMSE", "val MAE", "val R²", "train RMSE", "fit s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for candidate in sorted(result.candidates, key=lambda c: c.metrics[SELECTION_METRIC]):
        m = candidate.metrics
        is_champion = candidate is result.champion
        table.add_row(
            ("★ " if is_champion else "") + candidate.run_name,
            *(f"{m[key]:.2f}" for key in ("val_rmse", "val_mae")),
            f"{m['val_r2']:.3f}",
            f"{m['train_rmse']:.2f}",
            f"{m['fit_seconds']:.2f}",
            style="bold green" if is_champion else None,
        )
    console.print(table)
    test = result.test_metrics
    console.print(
        f"champion [bold]{result.champion.run_name}[/] on the test split: RMSE {test['test_rmse']:.2f}, "
        f"MAE {test['test_mae']:.2f}, R² {test['test_r2']:.3f}"
    )
    if "mlflow" in result.versions:
        console.print(f"MLflow: models:/{MODEL_NAME}@{ALIAS} is version {result.versions['mlflow']}")
    for plot in result.plots:
        console.print(f"plot: {plot}")
    for line in _where_to_look(settings, result, parent):
        console.print(line)


def _where_to_look(settings: Settings, result: DemoResult, parent: MultiTracker) -> list[str]:
    lines = []
    mlflow_run = result.parent_run_ids.get("mlflow")
    if mlflow_run and result.tracking_uri.startswith("http"):
        experiment_id = current_config().experiment_id(EXPERIMENT)
        lines.append(f"MLflow UI: {result.tracking_uri}/#/experiments/{experiment_id}/runs/{mlflow_run}")
    elif mlflow_run:
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        lines.append(f"MLflow UI on the local store: {mlflow_cli} ui --backend-store-uri {result.tracking_uri}")
    clearml = parent.backend("clearml")
    if clearml is not None:
        if clearml.offline:
            lines.append(
                f"ClearML: offline session {clearml.run_id} in {settings.clearml_offline_path}; "
                "`mlstack clearml sync` uploads it once the ClearML server is up"
            )
        else:
            lines.append(f"ClearML UI: {settings.clearml_web_url}/projects/*/experiments/{clearml.run_id}")
    lines += [f"[yellow]warning:[/] {failure}" for failure in result.failures]
    return lines


@contextmanager
def _logs_on(console: Console) -> Iterator[None]:
    """mlstack's notices (local store, ClearML offline, a backend failing) through `console`; not
    MLflow's link to each of the runs (the summary gives the one to the parent run)."""
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    package = logging.getLogger("mlstack")
    package.addHandler(handler)
    try:
        with mock.patch.dict(os.environ, {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}):
            yield
    finally:
        package.removeHandler(handler)
