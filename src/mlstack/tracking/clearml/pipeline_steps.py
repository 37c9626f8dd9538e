"""The pipeline's step functions: prepare -> train_{linear, ridge, random_forest} -> select_best -> evaluate.

ClearML runs each step from a script it builds out of the function's source plus this module's
imports (clearml.backend_interface.task.populate.CreateFromFunction). So the module has no imports
at all (a `from __future__` line would land after the script's header: SyntaxError) and every
function imports what it uses. The data is scikit-learn's bundled diabetes set: no download.
"""


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
