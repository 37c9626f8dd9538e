"""protojson gives the JSON value MLflow's `message_to_json` gives, for the answers it encodes."""

from __future__ import annotations

import json
import math
import random

import pytest
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInputs,
    RunOutputs,
    RunTag,
)
from mlflow.protos.service_pb2 import GetRun, SearchRuns
from mlflow.utils.proto_json_utils import message_to_json
from mlstack_mlflow_store import protojson

VALUES = [0.0, -0.0, 1.5, -2.25, 1e-320, 1.7976931348623157e308, math.nan, math.inf, -math.inf, 0.1 + 0.2, 7.0]


def random_run(generator: random.Random, index: int) -> Run:
    run_id = f"{generator.getrandbits(128):032x}"
    info = RunInfo(
        run_id=run_id,
        experiment_id=str(generator.randint(0, 5)),
        user_id=generator.choice(["", "ana", "bo"]),
        status=generator.choice(["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]),
        start_time=generator.randint(0, 2**62),
        end_time=generator.choice([None, 0, generator.randint(1, 2**62)]),
        lifecycle_stage=generator.choice(["active", "deleted"]),
        artifact_uri=generator.choice(["", f"mlflow-artifacts:/1/{run_id}/artifacts"]),
        run_name=generator.choice([None, "", f"run-{index}", 'ünïcode "quoted" \\ name']),
    )
    metrics = [
        Metric(f"m{k}", generator.choice(VALUES), generator.randint(0, 2**62), generator.randint(-(2**63), 2**63 - 1))
        for k in range(generator.randint(0, 4))
    ]
    params = [Param(f"p{k}", generator.choice(["", "0.1", "x" * 300])) for k in range(generator.randint(0, 3))]
    tags = [RunTag(f"t{k}", generator.choice(["", "v", "line\nbreak"])) for k in range(generator.randint(0, 3))]
    datasets = [
        DatasetInput(
            Dataset(
                "d", "digest", "local", "{}", generator.choice([None, '{"cols": 1}']), generator.choice([None, "{}"])
            ),
            [InputTag("mlflow.data.context", "training")] if generator.random() < 0.5 else [],
        )
        for _ in range(generator.randint(0, 2))
    ]
    outputs = [LoggedModelOutput(f"m-{k}", step=generator.randint(0, 9)) for k in range(generator.randint(0, 2))]
    inputs = generator.choice([None, RunInputs(dataset_inputs=datasets, model_inputs=[])])
    return Run(info, RunData(metrics, params, tags), inputs, generator.choice([None, RunOutputs(outputs)]))


@pytest.mark.parametrize("seed", range(5))
def test_a_search_runs_answer_is_mlflows_json_value(seed):
    generator = random.Random(seed)
    answer = SearchRuns.Response()
    answer.runs.extend(random_run(generator, index).to_proto() for index in range(60))
    if seed % 2:
        answer.next_page_token = "eyJvZmZzZXQiOiA2MH0="
    assert json.loads(protojson.message_to_json(answer)) == json.loads(message_to_json(answer))


def test_an_empty_answer_and_a_single_run_answer_are_mlflows_json_value():
    assert json.loads(protojson.message_to_json(SearchRuns.Response())) == json.loads(
        message_to_json(SearchRuns.Response())
    )
    answer = GetRun.Response()
    answer.run.MergeFrom(random_run(random.Random(9), 0).to_proto())
    assert json.loads(protojson.message_to_json(answer)) == json.loads(message_to_json(answer))
