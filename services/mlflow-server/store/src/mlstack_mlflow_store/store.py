"""`PostgresFastPathStore`: MLflow's SqlAlchemyStore with one statement for runs/get, log-metric,
set-tag and metrics-only log-batch, and search-runs without ORM objects (search.py).

MLflow's store answers these through its ORM: runs/get is seven queries and a tree of ORM objects
(about 6 ms of CPU on a 2-core VM), log-metric four round trips and a unit-of-work flush, a batch of
1000 points 1000 ORM objects. Here each is a single SQL statement run inside MLflow's own managed
session, so commit, rollback, error codes and read-replica routing stay MLflow's. Validation is
MLflow's own functions. Batches with params or tags, metrics tied to a logged model and the
run-name tag keep MLflow's code path, as does every other method.
tests/integration/test_fast_store.py holds this store and MLflow's to the same results.
"""

from __future__ import annotations

from types import SimpleNamespace

from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    LoggedModelOutput,
    Run,
    RunInputs,
    RunOutputs,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from sqlalchemy import text

from mlstack_mlflow_store import compat
from mlstack_mlflow_store.runs import RUN_COLUMNS, run_info_and_data
from mlstack_mlflow_store.search import search_run_answers, search_runs

# A run with its tags, params, latest metrics, dataset inputs and model inputs/outputs: the rows
# MLflow's get_run reads with seven queries. Typed arrays keep floats and bigints exact; the dataset
# inputs (all text) travel as JSON.
_GET_RUN = text(f"""
SELECT {RUN_COLUMNS},
       (SELECT json_agg(json_build_object(
                   'name', d.name, 'digest', d.digest, 'source_type', d.dataset_source_type,
                   'source', d.dataset_source, 'schema', d.dataset_schema, 'profile', d.dataset_profile,
                   'tags', ARRAY(SELECT ARRAY[it.name, it.value] FROM input_tags it
                                 WHERE it.input_uuid = i.input_uuid ORDER BY it.name))
                ORDER BY d.name, d.digest)
          FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id
         WHERE i.destination_type = 'RUN' AND i.destination_id = r.run_uuid) AS dataset_inputs,
       ARRAY(SELECT i.destination_id FROM inputs i
              WHERE i.source_type = 'RUN_INPUT' AND i.source_id = r.run_uuid
                AND i.destination_type = 'MODEL_INPUT' ORDER BY i.destination_id) AS model_inputs,
       ARRAY(SELECT i.destination_id FROM inputs i
              WHERE i.source_type = 'RUN_OUTPUT' AND i.source_id = r.run_uuid
                AND i.destination_type = 'MODEL_OUTPUT' ORDER BY i.destination_id) AS model_output_ids,
       ARRAY(SELECT i.step FROM inputs i
              WHERE i.source_type = 'RUN_OUTPUT' AND i.source_id = r.run_uuid
                AND i.destination_type = 'MODEL_OUTPUT' ORDER BY i.destination_id) AS model_output_steps
  FROM runs r
 WHERE r.run_uuid = :run_id
""")

# The points as columns, NaN and infinities stored as MLflow's `sanitize_metric_value` stores them
# (NaN: 0 and is_nan; +-inf: the largest finite double), and each key's latest value where (step,
# timestamp, value) moves forward: MLflow's rule (the first of equal points wins, a later one must
# be strictly greater), applied by the database atomically and in key order instead of under
# SELECT ... FOR UPDATE. Points already recorded are left alone and count for nothing, as in MLflow's
# duplicate handling. Nothing is written unless the run exists and is active; the one column
# returned tells which. (PostgreSQL runs every data-modifying WITH clause to completion whether the
# final SELECT reads it or not.)
_LOG_METRICS = text("""
WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = :run_id),
point AS (
    SELECT key, CASE WHEN raw = 'NaN' THEN 0
                     WHEN raw = 'Infinity' THEN CAST('1.7976931348623157e308' AS float8)
                     WHEN raw = '-Infinity' THEN CAST('-1.7976931348623157e308' AS float8)
                     ELSE raw END AS value,
           timestamp, step, raw = 'NaN' AS is_nan, position
      FROM unnest(CAST(:keys AS text[]), CAST(:values AS float8[]), CAST(:timestamps AS bigint[]),
                  CAST(:steps AS bigint[])) WITH ORDINALITY AS p(key, raw, timestamp, step, position)
),
inserted AS (
    INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid)
    SELECT key, value, timestamp, step, is_nan, :run_id FROM point, run WHERE run.lifecycle_stage = 'active'
     ORDER BY key, timestamp, step, value, is_nan  -- the primary key's order: every writer locks alike
    ON CONFLICT DO NOTHING
    RETURNING key, value, timestamp, step, is_nan
),
newest AS (
    SELECT DISTINCT ON (i.key) i.key, i.value, i.timestamp, i.step, i.is_nan
      FROM inserted i JOIN point p USING (key, value, timestamp, step, is_nan)
     ORDER BY i.key, i.step DESC, i.timestamp DESC, i.value DESC, p.position
),
latest AS (
    INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
    SELECT key, value, timestamp, step, is_nan, :run_id FROM newest
    ON CONFLICT (key, run_uuid) DO UPDATE
       SET value = EXCLUDED.value, timestamp = EXCLUDED.timestamp, step = EXCLUDED.step,
           is_nan = EXCLUDED.is_nan
     WHERE (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)
           < (EXCLUDED.step, EXCLUDED.timestamp, EXCLUDED.value)
)
SELECT (SELECT lifecycle_stage FROM run)
""")

_SET_TAG = text("""
WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = :run_id),
tag AS (
    INSERT INTO tags (key, value, run_uuid)
    SELECT :key, :value, :run_id FROM run WHERE lifecycle_stage = 'active'
    ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value
)
SELECT (SELECT lifecycle_stage FROM run)
""")


class PostgresFastPathStore(SqlAlchemyStore):
    """SqlAlchemyStore for PostgreSQL whose runs/get, log-metric, set-tag and log-batch take one statement
    and whose search-runs reads the page's runs in one."""

    def get_run(self, run_id):
        with self.ManagedSessionMaker() as session:
            row = session.execute(_GET_RUN, {"run_id": run_id}).mappings().one_or_none()
        if row is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        return _run_from_row(row)

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        return search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token)

    def search_run_answers(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        """The page `search_runs` returns, as runs/search answers it: each run's JSON value, and the next
        page token (routes.py answers search-runs with it)."""
        return search_run_answers(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token)

    def log_metric(self, run_id, metric):
        if metric.model_id is not None:
            return super().log_metric(run_id, metric)
        compat.validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        self._record_metrics(run_id, [metric])

    def log_batch(self, run_id, metrics, params, tags):
        if params or tags or any(metric.model_id is not None for metric in metrics):
            return super().log_batch(run_id, metrics, params, tags)
        compat.validate_run_id(run_id)
        compat.validate_batch_data(metrics, [], [])
        compat.validate_batch_limits(metrics, [], [])
        self._record_metrics(run_id, metrics)

    def set_tag(self, run_id, tag):
        if tag.key == MLFLOW_RUN_NAME:  # also renames the run: MLflow's own path
            return super().set_tag(run_id, tag)
        tag = compat.validate_tag(tag.key, tag.value)
        self._write_if_active(_SET_TAG, {"run_id": run_id, "key": tag.key, "value": tag.value})

    def _record_metrics(self, run_id, metrics):
        self.log_metric_columns(
            run_id,
            [metric.key for metric in metrics],
            [float(metric.value) for metric in metrics],
            [metric.timestamp for metric in metrics],
            [metric.step for metric in metrics],
        )

    def log_metric_columns(self, run_id, keys, values, timestamps, steps):
        """Record validated points given as columns (values may be NaN or infinite) in one statement."""
        params = {"run_id": run_id, "keys": keys, "values": values, "timestamps": timestamps, "steps": steps}
        # MLflow redrives a write that lost a deadlock the same way
        self._run_with_deadlock_retry(self._write_if_active, _LOG_METRICS, params)

    def _write_if_active(self, statement, params):
        """Run a guarded write; raise MLflow's own errors when the run is missing or not active."""
        with self.ManagedSessionMaker(read_only=False) as session:
            lifecycle_stage = session.execute(statement, params).scalar_one()
            if lifecycle_stage is None:
                raise MlflowException(f"Run with id={params['run_id']} not found", RESOURCE_DOES_NOT_EXIST)
            self._check_run_is_active(SimpleNamespace(run_uuid=params["run_id"], lifecycle_stage=lifecycle_stage))


def _run_from_row(row) -> Run:
    """The `Run` entity MLflow's `SqlRun.to_mlflow_entity` and input queries build, from one row."""
    info, data = run_info_and_data(row)
    dataset_inputs = [
        DatasetInput(
            dataset=Dataset(
                name=d["name"],
                digest=d["digest"],
                source_type=d["source_type"],
                source=d["source"],
                schema=d["schema"],
                profile=d["profile"],
            ),
            tags=[InputTag(key=name, value=value) for name, value in d["tags"]],
        )
        for d in row["dataset_inputs"] or []
    ]
    model_inputs = [LoggedModelInput(model_id=model_id) for model_id in row["model_inputs"]]
    model_outputs = [
        LoggedModelOutput(model_id=model_id, step=step)
        for model_id, step in zip(row["model_output_ids"], row["model_output_steps"], strict=True)
    ]
    return Run(
        info, data, RunInputs(dataset_inputs=dataset_inputs, model_inputs=model_inputs), RunOutputs(model_outputs)
    )
