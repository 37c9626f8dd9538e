"""A run as one SQL row holds it (`RUN_COLUMNS`), the `RunInfo` and `RunData` MLflow builds from it
(shared by runs/get, `store`, and search-runs, `search`), and their JSON as runs/search answers it."""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunData, RunInfo, RunTag

from mlstack_mlflow_store import compat, protojson

# A run's columns with its tags, params and latest metrics (`r` is the runs row).
RUN_COLUMNS = """
       r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time,
       r.lifecycle_stage, r.artifact_uri,
       ARRAY(SELECT ARRAY[t.key, t.value] FROM tags t WHERE t.run_uuid = r.run_uuid ORDER BY t.key) AS tags,
       ARRAY(SELECT ARRAY[p.key, p.value] FROM params p WHERE p.run_uuid = r.run_uuid ORDER BY p.key) AS params,
       ARRAY(SELECT m.key FROM latest_metrics m WHERE m.run_uuid = r.run_uuid ORDER BY m.key) AS metric_keys,
       ARRAY(SELECT m.value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid ORDER BY m.key) AS metric_values,
       ARRAY(SELECT m.timestamp FROM latest_metrics m WHERE m.run_uuid = r.run_uuid ORDER BY m.key)
           AS metric_timestamps,
       ARRAY(SELECT m.step FROM latest_metrics m WHERE m.run_uuid = r.run_uuid ORDER BY m.key) AS metric_steps,
       ARRAY(SELECT m.is_nan FROM latest_metrics m WHERE m.run_uuid = r.run_uuid ORDER BY m.key) AS metric_is_nan"""


def run_info_and_data(row) -> tuple[RunInfo, RunData]:
    """A run's info and data as MLflow's `SqlRun.to_mlflow_entity` builds them, from `RUN_COLUMNS`."""
    tags = [RunTag(key, value) for key, value in row["tags"]]
    info = RunInfo(
        run_id=row["run_uuid"],
        run_name=row["name"],
        experiment_id=str(row["experiment_id"]),
        user_id=row["user_id"],
        status=row["status"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        lifecycle_stage=row["lifecycle_stage"],
        artifact_uri=row["artifact_uri"],
    )
    if not info.run_name and (run_name := compat.run_name_from_tags(tags)):
        info._set_run_name(run_name)
    metrics = [
        Metric(key=key, value=float("nan") if is_nan else value, timestamp=timestamp, step=step)
        for key, value, timestamp, step, is_nan in zip(
            row["metric_keys"],
            row["metric_values"],
            row["metric_timestamps"],
            row["metric_steps"],
            row["metric_is_nan"],
            strict=True,
        )
    ]
    data = RunData(metrics=metrics, params=[Param(key, value) for key, value in row["params"]], tags=tags)
    return info, data


def run_answer(row) -> dict:
    """The info and data of `run_info_and_data(row)` as MLflow's JSON of the run has them (the JSON
    value protojson gives for `Run.to_proto()`, keys in the same order), built without the entities."""
    run_id, name, end_time, artifact_uri = row["run_uuid"], row["name"], row["end_time"], row["artifact_uri"]
    if not name:
        name = compat.run_name_from_tags([RunTag(key, value) for key, value in row["tags"]]) or name
    info = {"run_uuid": run_id, "experiment_id": str(row["experiment_id"])}
    if name is not None:
        info["run_name"] = name
    info["user_id"] = row["user_id"]
    info["status"] = row["status"]
    info["start_time"] = row["start_time"]
    if end_time:
        info["end_time"] = end_time
    if artifact_uri:
        info["artifact_uri"] = artifact_uri
    info["lifecycle_stage"] = row["lifecycle_stage"]
    info["run_id"] = run_id
    data = {}
    if row["metric_keys"]:
        data["metrics"] = [
            {
                "key": key,
                "value": "NaN" if is_nan else protojson.double_value(value),
                "timestamp": timestamp,
                "step": step,
            }
            for key, value, timestamp, step, is_nan in zip(
                row["metric_keys"],
                row["metric_values"],
                row["metric_timestamps"],
                row["metric_steps"],
                row["metric_is_nan"],
                strict=True,
            )
        ]
    if row["params"]:
        data["params"] = _key_values(row["params"])
    if row["tags"]:
        data["tags"] = _key_values(row["tags"])
    return {"info": info, "data": data}


def _key_values(pairs) -> list[dict]:
    """Params or tags as MLflow's JSON lists them (a NULL value is a field left out)."""
    return [{"key": key, "value": value} if value is not None else {"key": key} for key, value in pairs]
