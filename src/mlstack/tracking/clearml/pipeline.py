"""The training pipeline as a ClearML PipelineController:
prepare -> train_{linear, ridge, random_forest} -> select_best -> evaluate.

Step functions are self-contained (imports inside): ClearML ships each as a standalone script to
wherever it runs. Data is scikit-learn's bundled diabetes set, so no download is needed.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from clearml import PipelineController

from mlstack.settings import Settings
from mlstack.tracking.clearml.connection import require_server

MODEL_KINDS = ("linear", "ridge", "random_forest")


def prepare(test_size: float = 0.2, seed: int = 42) -> dict:
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    features, target = load_diabetes(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(features, target, test_size=test_size, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=test_size, random_state=seed)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}


def train(data: dict, model_kind: str, seed: int = 42) -> dict:
    from clearml import Logger
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import mean_squared_error

    estimators = {
        "linear": LinearRegression(),
        "ridge": Ridge(alpha=1.0),
        "random_forest": RandomForestRegressor(n_estimators=100, random_state=seed),
    }
    model = estimators[model_kind].fit(data["x_train"], data["y_train"])
    val_rmse = float(mean_squared_error(data["y_val"], model.predict(data["x_val"])) ** 0.5)
    Logger.current_logger().report_scalar(title="val_rmse", series="validation", value=val_rmse, iteration=0)
    return {"model_kind": model_kind, "model": model, "val_rmse": val_rmse}


def select_best(linear: dict, ridge: dict, random_forest: dict) -> dict:
    from clearml import Logger

    best = min((linear, ridge, random_forest), key=lambda candidate: candidate["val_rmse"])
    Logger.current_logger().report_text(f"best model: {best['model_kind']} (val_rmse {best['val_rmse']:.3f})")
    return best


def evaluate(best: dict, data: dict) -> dict:
    from clearml import Logger
    from sklearn.metrics import mean_squared_error, r2_score

    predictions = best["model"].predict(data["x_test"])
    metrics = {
        "test_rmse": float(mean_squared_error(data["y_test"], predictions) ** 0.5),
        "test_r2": float(r2_score(data["y_test"], predictions)),
    }
    for name, value in metrics.items():
        Logger.current_logger().report_scalar(title=name, series="test", value=value, iteration=0)
    return {"model_kind": best["model_kind"], **metrics}


def build_pipeline(project: str, queue: str, name: str = "mlstack training pipeline") -> PipelineController:
    """The controller with its six steps; steps run on `queue` unless started locally."""
    packages = [f"{package}=={version(package)}" for package in ("scikit-learn", "numpy", "clearml")]
    pipe = PipelineController(name=name, project=project, version="1.0.0", add_pipeline_tags=True)
    pipe.set_default_execution_queue(queue)
    pipe.add_function_step(
        name="prepare", function=prepare, function_return=["data"], packages=packages, cache_executed_step=False
    )
    for kind in MODEL_KINDS:
        pipe.add_function_step(
            name=f"train_{kind}",
            function=train,
            parents=["prepare"],
            packages=packages,
            function_kwargs={"data": "${prepare.data}", "model_kind": kind},
            function_return=["result"],
        )
    pipe.add_function_step(
        name="select_best",
        function=select_best,
        parents=[f"train_{kind}" for kind in MODEL_KINDS],
        function_kwargs={kind: f"${{train_{kind}.result}}" for kind in MODEL_KINDS},
        function_return=["best"],
        packages=packages,
    )
    pipe.add_function_step(
        name="evaluate",
        function=evaluate,
        parents=["select_best", "prepare"],
        packages=packages,
        function_kwargs={"best": "${select_best.best}", "data": "${prepare.data}"},
        function_return=["metrics"],
    )
    return pipe


def run_pipeline(
    settings: Settings,
    project: str = "mlstack",
    where: Literal["local", "agent"] = "local",
    queue: str | None = None,
) -> str:
    """Run the pipeline to completion and return the controller's task id.

    "local": every step runs here as a subprocess. "agent": the controller runs here and each step
    is enqueued on `queue` (default CLEARML_DEFAULT_QUEUE) for the agent (`--profile agent`).
    """
    require_server(settings)
    pipe = build_pipeline(project, queue or settings.clearml_default_queue)
    pipe.start_locally(run_pipeline_steps_locally=where == "local")
    return pipe.id
