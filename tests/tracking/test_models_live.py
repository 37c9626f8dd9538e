"""Models against the live stack: logged with signatures, registered, moved by alias, loaded back."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from mlstack.tracking import (
    ExperimentTracker,
    get_model_version_by_alias,
    list_registered_models,
    load_best_model,
    load_model_by_alias,
    register_best_model,
    set_model_alias,
    transition_model_stage,
)

pytestmark = pytest.mark.integration

FEATURES = pd.DataFrame({"x1": np.arange(20.0), "x2": np.arange(20.0) ** 0.5})
TARGET = 3 * FEATURES["x1"] + 1


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input * 2


def train(experiment: str, alpha: float, registered_model_name: str | None = None):
    model = Ridge(alpha=alpha).fit(FEATURES, TARGET)
    with ExperimentTracker(experiment, run_name=f"ridge-{alpha}") as tracker:
        tracker.log_param("alpha", alpha)
        tracker.log_metric("rmse", float(np.sqrt(np.mean((model.predict(FEATURES) - TARGET) ** 2))))
        info = tracker.log_model(
            model, name="model", input_example=FEATURES.head(3), registered_model_name=registered_model_name
        )
    return model, info


def test_sklearn_models_register_move_by_alias_and_load_back(experiment):
    name = f"ridge-{uuid.uuid4().hex[:8]}"
    first, info = train(experiment, 0.1, registered_model_name=name)
    second, _ = train(experiment, 100.0, registered_model_name=name)
    assert info.model_uri.startswith("models:/")
    assert info.signature.inputs.input_names() == ["x1", "x2"]

    set_model_alias(name, "champion", 1)
    np.testing.assert_allclose(load_model_by_alias(name, "champion").predict(FEATURES), first.predict(FEATURES))
    transition_model_stage(name, "1", "Production")
    transition_model_stage(name, "2", "Production", archive_existing=True)
    assert get_model_version_by_alias(name, "production") == "2"
    client = mlflow.MlflowClient()
    assert client.get_model_version(name, "1").tags["mlstack.stage"] == "Archived"
    np.testing.assert_allclose(
        mlflow.pyfunc.load_model(f"models:/{name}@production").predict(FEATURES), second.predict(FEATURES)
    )

    row = list_registered_models(f"name = '{name}'").set_index("name").loc[name]
    assert (row["latest_version"], row["latest_stage"]) == ("2", "Production")
    assert row["aliases"] == {"champion": "1", "production": "2"}


def test_the_best_run_model_is_registered_and_loaded(experiment):
    best, _ = train(experiment, 0.01)
    train(experiment, 500.0)
    name = f"best-{uuid.uuid4().hex[:8]}"
    version = register_best_model(experiment, name, metric="rmse", mode="min", alias="candidate")
    assert version == "1" and get_model_version_by_alias(name, "candidate") == "1"
    np.testing.assert_allclose(load_best_model(experiment, "rmse").predict(FEATURES), best.predict(FEATURES))


def test_pyfunc_models_are_logged_and_served_by_alias(experiment):
    name = f"doubler-{uuid.uuid4().hex[:8]}"
    with ExperimentTracker(experiment, run_name="pyfunc") as tracker:
        tracker.log_model(Doubler(), name="doubler", input_example=FEATURES.head(2), registered_model_name=name)
    set_model_alias(name, "live", 1)
    np.testing.assert_allclose(load_model_by_alias(name, "live").predict(FEATURES), FEATURES * 2)
