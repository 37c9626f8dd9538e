"""The pipeline's step functions: prepare -> train_{linear, ridge, random_forest} -> select_best -> evaluate.

ClearML runs each step from a script it builds out of the function's source, its helper functions'
(`register_step_model` for train and select_best) and this module's imports
(clearml.backend_interface.task.populate.CreateFromFunction). So the module has no imports at all (a
`from __future__` line would land after the script's header: SyntaxError) and every function imports
what it uses. The data is scikit-learn's bundled diabetes set: no download.
"""


def register_step_model(model, name: str, summary: dict) -> str:
    """Register `model` as a new version of `name` on the step's task; returns the model id.

    The pickled weights are uploaded to the task's output destination (the pipeline sets it) before
    this returns. `summary`, plus the id of the pipeline run (the step's parent task), becomes the
    model's configuration and its typed metadata. Offline, the session keeps the weights and the
    configuration, and `sync` uploads the weights and makes the metadata from the configuration.
    """
    import os
    import pickle
    import tempfile

    from clearml import OutputModel, Task

    task = Task.current_task()
    offline = task.is_offline()
    if not (offline or task.output_uri):
        raise ValueError(
            f"task {task.id} has no output destination: the weights of {name!r} would be registered as a "
            "path on this machine. Give the pipeline an output_uri (the fileserver or your storage)."
        )
    metadata = {**summary, **({"pipeline_id": task.parent} if task.parent else {})}
    registered = OutputModel(task=task, name=name, config_dict=metadata, framework="ScikitLearn")
    if offline:
        # clearml 2.1.12: the offline placeholder model lacks the `locked` flag that update_weights reads.
        registered._get_base_model().update(locked=False)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{name}.pkl")
        with open(path, "wb") as weights:
            pickle.dump(model, weights)  # not joblib.dump: the SDK would also log that file as a model of its own
        registered.update_weights(weights_filename=path, auto_delete_file=False, async_enable=False)
    typed = {key: {"value": str(value), "type": type(value).__name__} for key, value in metadata.items()}
    if not offline and not registered.set_all_metadata(typed, replace=False):
        raise RuntimeError(f"the server refused the metadata of model {name!r} ({registered.id})")
    return registered.id


def prepare(test_size: float = 0.2, seed: int = 42) -> dict:
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    features, target = load_diabetes(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(features, target, test_size=test_size, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=test_size, random_state=seed)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}


def train(data: dict, model_kind: str, model_base_name: str, seed: int = 42) -> dict:
    """Fit one model kind and register it as `<model_base_name>-<model_kind>` with its validation metrics."""
    from clearml import Logger
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import mean_squared_error, r2_score

    estimators = {
        "linear": LinearRegression(),
        "ridge": Ridge(alpha=1.0),
        "random_forest": RandomForestRegressor(n_estimators=100, random_state=seed),
    }
    model = estimators[model_kind].fit(data["x_train"], data["y_train"])
    predictions = model.predict(data["x_val"])
    metrics = {
        "val_rmse": float(mean_squared_error(data["y_val"], predictions) ** 0.5),
        "val_r2": float(r2_score(data["y_val"], predictions)),
    }
    Logger.current_logger().report_scalar(title="val_rmse", series="validation", value=metrics["val_rmse"], iteration=0)
    summary = {"model_kind": model_kind, **metrics, "train_rows": len(data["y_train"])}
    model_id = register_step_model(model, f"{model_base_name}-{model_kind}", summary)
    return {"model_kind": model_kind, "model": model, "model_id": model_id, **metrics}


def select_best(linear: dict, ridge: dict, random_forest: dict, model_base_name: str) -> dict:
    """The candidate with the lowest val_rmse, registered as `<model_base_name>-best`."""
    from clearml import Logger

    candidates = {"linear": linear, "ridge": ridge, "random_forest": random_forest}
    best = min(candidates.values(), key=lambda candidate: candidate["val_rmse"])
    summary = {
        "model_kind": best["model_kind"],
        "val_rmse": best["val_rmse"],
        "val_r2": best["val_r2"],
        "source_model_id": best["model_id"],
        **{f"val_rmse_{kind}": candidate["val_rmse"] for kind, candidate in candidates.items()},
    }
    register_step_model(best["model"], f"{model_base_name}-best", summary)
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
