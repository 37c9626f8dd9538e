"""Comparison tables: which reported line a metric column holds, and registry metadata typed back.

Task.get_tasks, Task.get_task and Model.query_models are faked with objects whose
get_last_scalar_metrics() and get_all_metadata() answer exactly as the SDK does against a server:
{graph: {line: {"last", "min", "max"}}} and {key: {"key", "type", "value"}} with string values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from clearml import Model, Task
from clearml_helpers import make_settings

from mlstack.tracking.clearml import compare
from mlstack.tracking.clearml.errors import ClearMLConfigError


def line(last: float) -> dict:
    return {"last": last, "min": last, "max": last}


def registry_entry(key: str, value, v_type: str | None = None) -> dict:
    """A metadata entry as ClearMLTracker.register_model stores it: str(value), the value's type name."""
    return {"key": key, "type": v_type or type(value).__name__, "value": str(value)}


@dataclass
class FakeTask:
    id: str
    scalars: dict
    name: str = "train"
    status: str = "completed"

    def get_tags(self):
        return []

    def get_last_scalar_metrics(self):
        return self.scalars


@dataclass
class FakeModel:
    id: str
    metadata: dict = field(default_factory=dict)
    config_dict: dict = field(default_factory=dict)
    task: str | None = None
    name: str = "housing-ridge"
    published: bool = False
    tags: list = field(default_factory=list)
    url: str = "https://files.example/housing-ridge.joblib"

    def get_all_metadata(self):
        return {key: dict(entry) for key, entry in self.metadata.items()}


@pytest.fixture
def clearml_server(monkeypatch, tmp_path):
    """Fills the faked server: `tasks` for Task.get_tasks / Task.get_task, `models` for Model.query_models."""
    state = {"tasks": [], "models": []}
    monkeypatch.setattr(Task, "get_tasks", lambda **_: state["tasks"])
    monkeypatch.setattr(Task, "get_task", lambda task_id: next(t for t in state["tasks"] if t.id == task_id))
    monkeypatch.setattr(Model, "query_models", lambda **_: state["models"])
    monkeypatch.setattr(compare, "require_server", lambda settings: None)
    state["settings"] = make_settings(tmp_path / "checkout")
    return state


TRAIN_FIRST = {"val_rmse": {"train": line(2.0), "validation": line(4.2)}}


def test_a_metric_graph_with_several_lines_reads_its_validation_line(clearml_server):
    clearml_server["tasks"] = [FakeTask("t1", TRAIN_FIRST)]

    frame = compare.compare_clearml_experiments("housing", "val_rmse", settings=clearml_server["settings"])

    assert frame["val_rmse"].tolist() == [4.2]


def test_a_line_named_like_the_metric_wins_over_validation(clearml_server):
    scalars = {"rmse": {"validation": line(4.2), "rmse": line(3.0)}}
    clearml_server["tasks"] = [FakeTask("t1", scalars)]

    frame = compare.compare_clearml_experiments("housing", "rmse", settings=clearml_server["settings"])

    assert frame["rmse"].tolist() == [3.0]


def test_the_caller_names_the_series(clearml_server):
    clearml_server["tasks"] = [FakeTask("t1", TRAIN_FIRST), FakeTask("t2", {"val_rmse": {"train": line(1.5)}})]

    frame = compare.compare_clearml_experiments(
        "housing", "val_rmse", series="train", settings=clearml_server["settings"]
    )

    assert frame.set_index("task_id")["val_rmse"].to_dict() == {"t1": 2.0, "t2": 1.5}


def test_a_graph_with_several_lines_and_none_preferred_is_an_error_listing_them(clearml_server):
    clearml_server["tasks"] = [FakeTask("t1", {"rmse": {"train": line(2.0), "test": line(4.0)}}, name="ridge")]

    with pytest.raises(ClearMLConfigError, match=r"'ridge'.*\['test', 'train'\].*series="):
        compare.compare_clearml_experiments("housing", "rmse", settings=clearml_server["settings"])


def test_a_line_name_reported_in_several_graphs_is_an_error_listing_them(clearml_server):
    scalars = {"Summary": {"f1": line(0.8)}, "Metrics": {"f1": line(0.7)}}
    clearml_server["tasks"] = [FakeTask("t1", scalars)]

    with pytest.raises(ClearMLConfigError, match=r"\['Metrics/f1', 'Summary/f1'\]"):
        compare.compare_clearml_experiments("churn", "f1", settings=clearml_server["settings"])


def test_compare_models_reads_a_graph_slash_line_name_from_the_producing_task(clearml_server):
    clearml_server["tasks"] = [FakeTask("t1", TRAIN_FIRST), FakeTask("t2", {"val_rmse": {"train": line(1.0)}})]
    clearml_server["models"] = [FakeModel("m1", task="t1"), FakeModel("m2", task="t2")]

    frame = compare.compare_models("housing", "val_rmse/train", mode="min", settings=clearml_server["settings"])

    assert frame[["model_id", "val_rmse/train"]].values.tolist() == [["m2", 1.0], ["m1", 2.0]]


def test_compare_models_takes_the_series_for_task_scalars(clearml_server):
    clearml_server["tasks"] = [FakeTask("t1", TRAIN_FIRST)]
    clearml_server["models"] = [FakeModel("m1", task="t1")]

    frame = compare.compare_models(
        "housing", "val_rmse", series="validation", mode="min", settings=clearml_server["settings"]
    )

    assert frame["val_rmse"].tolist() == [4.2]


def ridge_metadata(val_rmse: float, alpha: float, n_estimators: int, scaled: bool) -> dict:
    values = {"val_rmse": val_rmse, "alpha": alpha, "n_estimators": n_estimators, "scaled": scaled, "model": "ridge"}
    return {key: registry_entry(key, value) for key, value in values.items()}


def test_registered_model_metadata_comes_back_typed(clearml_server):
    clearml_server["models"] = [
        FakeModel("m2", metadata=ridge_metadata(3.9, 1.0, 200, False)),
        FakeModel("m1", metadata=ridge_metadata(4.2, 0.5, 100, True)),
    ]

    frame = compare.compare_registered_models("housing-ridge", "housing", settings=clearml_server["settings"])

    assert frame["val_rmse"].dtype == "float64"
    assert frame["alpha"].dtype == "float64"
    assert frame["n_estimators"].dtype == "int64"
    assert frame["scaled"].dtype == "bool"
    assert frame["model"].tolist() == ["ridge", "ridge"]
    assert frame["val_rmse"].tolist() == [3.9, 4.2]


def test_a_missing_metadata_key_leaves_a_float_column_with_nan(clearml_server):
    partial = ridge_metadata(3.9, 1.0, 200, False)
    del partial["val_rmse"]
    clearml_server["models"] = [
        FakeModel("m2", metadata=partial),
        FakeModel("m1", metadata=ridge_metadata(4.2, 0.5, 100, True)),
    ]

    frame = compare.compare_registered_models("housing-ridge", settings=clearml_server["settings"])

    assert frame["val_rmse"].dtype == "float64"
    assert frame["val_rmse"].isna().tolist() == [True, False]


def test_list_tuple_and_dict_metadata_come_back_as_python_values(clearml_server):
    values = {"layers": [64, 32], "shape": (506, 13), "grid": {"alpha": [0.1, 1.0]}}
    clearml_server["models"] = [FakeModel("m1", metadata={k: registry_entry(k, v) for k, v in values.items()})]

    row = compare.compare_registered_models("housing-ridge", settings=clearml_server["settings"]).iloc[0]

    assert (row["layers"], row["shape"], row["grid"]) == ([64, 32], (506, 13), {"alpha": [0.1, 1.0]})


def test_metadata_of_a_type_the_registry_does_not_know_keeps_the_configurations_value(clearml_server):
    """numpy numbers are stored with type "None" (set_metadata keeps only builtin type names)."""
    metadata = {"val_rmse": registry_entry("val_rmse", 4.2, v_type="None")}
    clearml_server["models"] = [FakeModel("m1", metadata=metadata, config_dict={"val_rmse": 4.2})]

    frame = compare.compare_registered_models("housing-ridge", settings=clearml_server["settings"])

    assert frame["val_rmse"].dtype == "float64"


def test_compare_models_metadata_column_is_typed(clearml_server):
    clearml_server["models"] = [
        FakeModel("m1", metadata=ridge_metadata(4.2, 0.5, 100, True)),
        FakeModel("m2", metadata=ridge_metadata(3.9, 1.0, 200, False)),
    ]

    frame = compare.compare_models("housing", "val_rmse", mode="min", settings=clearml_server["settings"])

    assert frame["model_id"].tolist() == ["m2", "m1"]
    assert frame["val_rmse"].dtype == "float64"
    assert frame.loc[0, "metadata"] == {
        "val_rmse": 3.9,
        "alpha": 1.0,
        "n_estimators": 200,
        "scaled": False,
        "model": "ridge",
    }


def test_numpy_metrics_are_registered_as_python_numbers():
    import numpy as np

    from mlstack.tracking.clearml.registry import set_typed_metadata

    recorded = {}

    class RecordingModel:
        def set_metadata(self, key, value, v_type):
            recorded[key] = (value, v_type)

    set_typed_metadata(RecordingModel(), {"rmse": np.float64(3.5), "trees": np.int64(100), "name": "ridge"})
    assert recorded == {"rmse": ("3.5", "float"), "trees": ("100", "int"), "name": ("ridge", "str")}
