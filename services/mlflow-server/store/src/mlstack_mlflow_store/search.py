"""search-runs without an ORM object per run, param, tag and metric.

MLflow's `_search_runs` selects the page with SQLAlchemy ORM objects and loads every run's params,
tags and latest metrics as ORM objects too (about 0.25 ms a run on a 2-core VM). Here MLflow's own
clause builders (filter, order-by with its NULL and NaN placement, run_view_type, experiments, paging)
choose the page of run ids, so which runs come back, in which order, with which page token, is
MLflow's by construction; one statement then reads those runs with their tags, params and latest
metrics as typed arrays, and MLflow's own bulk queries attach their dataset inputs and model outputs.
"""

from __future__ import annotations

from mlflow.entities import Run, RunInputs, RunOutputs
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.store.tracking.dbmodels.models import SqlRun
from mlflow.utils.search_utils import SearchUtils
from sqlalchemy import select, text

from mlstack_mlflow_store import compat
from mlstack_mlflow_store.runs import RUN_COLUMNS, run_info_and_data

# The runs of a page, in the page's order.
_PAGE_RUNS = text(f"""
SELECT {RUN_COLUMNS}
  FROM unnest(CAST(:run_ids AS text[])) WITH ORDINALITY AS page(run_uuid, position)
  JOIN runs r ON r.run_uuid = page.run_uuid
 ORDER BY page.position
""")


def search_runs(store, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """What `SqlAlchemyStore._search_runs` returns: (runs, next page token)."""
    store._validate_max_results_param(max_results, allow_null=True)
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))
    with store.ManagedSessionMaker() as session:
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
        dataset_inputs = store._get_run_inputs(run_uuids=run_ids, session=session)
        model_outputs = store._get_model_outputs_bulk(run_ids=run_ids, session=session)
    inputs_by_run = dict(zip(run_ids, dataset_inputs, strict=True))
    runs = [
        Run(
            *run_info_and_data(row),
            RunInputs(dataset_inputs=inputs_by_run[row["run_uuid"]]),
            RunOutputs(model_outputs[row["run_uuid"]]),
        )
        for row in rows  # a run deleted for good since the page was chosen is left out
    ]
    return runs, next_page_token
