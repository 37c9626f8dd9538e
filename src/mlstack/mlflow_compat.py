"""MLflow's private names that mlstack's own code reaches (the server plugin has its own door:
mlstack_mlflow_store.compat), each under a name that says the public behaviour it stands for.
`tests/unit/test_mlflow_compat.py` checks every one exists on the installed MLflow, so an MLflow
upgrade that moves one fails there, not in a user's gc or dataset log."""

from __future__ import annotations

from typing import Any

#: the store methods and dataset method below -> the public behaviour each stands for
USES = {
    "_get_deleted_runs": "the deleted runs `mlflow gc` lists",
    "_hard_delete_run": "how `mlflow gc` deletes a run for good",
    "_to_mlflow_entity": "the dataset entity `mlflow.log_input` sends",
}


def deleted_run_ids(store: Any, older_than_ms: int) -> list[str]:
    """The runs deleted at least `older_than_ms` ago, as `mlflow gc` finds them."""
    return store._get_deleted_runs(older_than=older_than_ms)


def delete_run_for_good(store: Any, run_id: str) -> None:
    """The run's rows gone, as `mlflow gc` removes them."""
    store._hard_delete_run(run_id)


def dataset_entity(dataset: Any) -> Any:
    """The `Dataset` entity of an `mlflow.data` dataset, as `mlflow.log_input` builds it."""
    return dataset._to_mlflow_entity()
