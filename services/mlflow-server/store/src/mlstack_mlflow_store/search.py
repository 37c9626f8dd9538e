"""search-runs without an ORM object per run, param, tag and metric, and its answer without a `Run`.

MLflow's `_search_runs` selects the page with SQLAlchemy ORM objects and loads every run's params,
tags and latest metrics as ORM objects too (about 0.25 ms a run on a 2-core VM). Here MLflow's own
clause builders (filter, order-by with its NULL and NaN placement, run_view_type, experiments, paging)
choose the page of run ids, so which runs come back, in which order, with which page token, is
MLflow's by construction; one statement then reads those runs with their tags, params and latest
metrics as typed arrays, and MLflow's own bulk queries attach the dataset inputs and model outputs of
the runs that have any.

`search_runs` builds MLflow's `Run` entities from those rows (what the store API returns);
`search_run_answers` builds the JSON of each run straight from its row (what runs/search answers:
`runs.run_answer`), skipping the entities, their protobuf and its encoding (about 1 s for 10,000 runs).
The statements run with PostgreSQL's JIT compilation off: for a page of 10,000 runs it compiled the
runs statement for ~0.25 s (EXPLAIN ANALYZE) before running it for about as long.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.entities import Run, RunInputs, RunOutputs
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.store.tracking.dbmodels.models import SqlRun
from mlflow.utils.search_utils import SearchUtils
from sqlalchemy import select, text

from mlstack_mlflow_store import compat, protojson
from mlstack_mlflow_store.runs import RUN_COLUMNS, run_answer, run_info_and_data

# The runs of a page, in the page's order, and whether each has dataset inputs or model outputs (the
# rows MLflow's `_get_run_inputs` and `_get_model_outputs_bulk` read).
_PAGE_RUNS = text(f"""
SELECT {RUN_COLUMNS},
       EXISTS (SELECT 1 FROM inputs i WHERE i.destination_type = 'RUN' AND i.destination_id = r.run_uuid)
           AS has_dataset_inputs,
       EXISTS (SELECT 1 FROM inputs i WHERE i.source_type = 'RUN_OUTPUT' AND i.source_id = r.run_uuid
                  AND i.destination_type = 'MODEL_OUTPUT') AS has_model_outputs
  FROM unnest(CAST(:run_ids AS text[])) WITH ORDINALITY AS page(run_uuid, position)
  JOIN runs r ON r.run_uuid = page.run_uuid
 ORDER BY page.position
""")
_NO_JIT = text("SET LOCAL jit = off")


def search_runs(store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """What `SqlAlchemyStore._search_runs` returns: (runs, next page token)."""
    rows, dataset_inputs, model_outputs, next_page_token = _read_page(
        store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
    )
    runs = [
        Run(
            *run_info_and_data(row),
            RunInputs(dataset_inputs=dataset_inputs.get(row["run_uuid"], [])),
            RunOutputs(model_outputs.get(row["run_uuid"], [])),
        )
        for row in rows
    ]
    return runs, next_page_token


def search_run_answers(store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """The runs of `search_runs` as runs/search answers them (each run's JSON value), and the next page
    token as the answer spells it (text)."""
    with _collection_paused():
        rows, dataset_inputs, model_outputs, next_page_token = _read_page(
            store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
        )
        runs = []
        for row in rows:
            run = run_answer(row)
            run_id = row["run_uuid"]
            run["inputs"] = _message_value(RunInputs(dataset_inputs[run_id])) if run_id in dataset_inputs else {}
            run["outputs"] = _message_value(RunOutputs(model_outputs[run_id])) if run_id in model_outputs else {}
            runs.append(run)
    return runs, next_page_token.decode() if next_page_token else None


def _read_page(store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """The page's run rows (a run deleted for good since the page was chosen is left out), the dataset
    inputs and model outputs of those that have any (by run id), and the next page token."""
    store._validate_max_results_param(max_results, allow_null=True)
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))
    with store.ManagedSessionMaker() as session:
        session.execute(_NO_JIT)
        parsed_filters = SearchUtils.parse_search_filter(filter_string)
        cases_orderby, parsed_orderby, sorting_joins = compat.order_by_clauses(order_by, session)
        # DISTINCT needs what the page is ordered by in its select list: MLflow's order-by columns
        # and the default order's start_time and run_uuid.
        stmt = select(SqlRun.run_uuid, SqlRun.start_time, *cases_orderby)
        attribute_filters, non_attribute_filters, dataset_filters = compat.filter_clauses(
            parsed_filters, session, store._get_dialect()
        )
        for non_attribute_filter in non_attribute_filters:
            stmt = stmt.join(non_attribute_filter)
        for dataset_filter in dataset_filters:
            stmt = stmt.join(dataset_filter, SqlRun.run_uuid == dataset_filter.c.destination_id)
        for sorting_join in sorting_joins:
            stmt = stmt.outerjoin(sorting_join)
        offset = SearchUtils.parse_start_offset_from_page_token(page_token)
        experiment_ids = store._filter_experiment_ids(session, compat.parse_experiment_ids(experiment_ids))
        stmt = (
            stmt.distinct()
            .filter(SqlRun.experiment_id.in_(experiment_ids), SqlRun.lifecycle_stage.in_(stages), *attribute_filters)
            .order_by(*parsed_orderby)
            .offset(offset)
        )
        if max_results is not None:
            stmt = stmt.limit(max_results + 1)
        run_ids = [row[0] for row in session.execute(stmt)]
        next_page_token = None
        if max_results is not None and len(run_ids) == max_results + 1:
            next_page_token = SearchUtils.create_page_token(offset + max_results)
            run_ids = run_ids[:max_results]
        rows = session.execute(_PAGE_RUNS, {"run_ids": run_ids}).mappings().all()
        with_datasets = [row["run_uuid"] for row in rows if row["has_dataset_inputs"]]
        with_outputs = [row["run_uuid"] for row in rows if row["has_model_outputs"]]
        dataset_inputs = (
            dict(zip(with_datasets, store._get_run_inputs(run_uuids=with_datasets, session=session), strict=True))
            if with_datasets
            else {}
        )
        model_outputs = store._get_model_outputs_bulk(run_ids=with_outputs, session=session) if with_outputs else {}
    return rows, dataset_inputs, model_outputs, next_page_token


@contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (for the worker process) while a page becomes objects.
    Its rows and answers form no cycles, but allocating 100,000s of lists and dicts sets off full
    collections that walk everything alive: 0.8 s for 10,000 runs with them, 0.43 s without."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _message_value(entity) -> dict:
    return protojson.message_to_dict(entity.to_proto())
