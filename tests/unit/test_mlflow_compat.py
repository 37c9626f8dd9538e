"""Every MLflow private name mlstack's own code reaches exists on the installed MLflow."""

import mlflow.data
import pandas as pd
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlstack import mlflow_compat


def test_every_private_name_is_still_there():
    dataset = mlflow.data.from_pandas(pd.DataFrame({"x": [1]}), source="here", name="d")
    owners = {"_get_deleted_runs": SqlAlchemyStore, "_hard_delete_run": SqlAlchemyStore, "_to_mlflow_entity": dataset}
    assert set(owners) == set(mlflow_compat.USES)
    for name, owner in owners.items():
        assert callable(getattr(owner, name, None)), f"MLflow no longer has {name} ({mlflow_compat.USES[name]})"


def test_a_dataset_entity_carries_the_name_and_source():
    dataset = mlflow.data.from_pandas(pd.DataFrame({"x": [1]}), source="here", name="d")
    entity = mlflow_compat.dataset_entity(dataset)
    assert entity.name == "d" and "here" in entity.source
