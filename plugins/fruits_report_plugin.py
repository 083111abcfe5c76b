"""Airflow plugin: a DAG run's report page, one click from the run in the Airflow UI ("Run report" tab).

The api-server serves `reports/batch=<ds>/run_report.html` (fruits.report_page) at
`/fruits-report/dags/<dag_id>/runs/<run_id>`, read from the lake with the Airflow connection the DAG uses,
behind Airflow's own authentication and DAG-run read permission: no presigned URL to expire or leak, no
copy of the photos outside the EU bucket. Which lake and which batch: the run's `check_gdpr` XCom (its
settings and batch), so a manual run of another batch or a local-target run finds its own page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import DagAccessEntity, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

log = logging.getLogger(__name__)

URL_PREFIX = "/fruits-report"
CHECK_TASK = "check_gdpr"  # the DAG's first task: its XCom is the run (settings + parsed Params, so the batch)
# The page holds no script and fetches nothing: the browser is told so too.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
}


def run_checked(session: Any, dag_id: str, run_id: str) -> Mapping[str, Any] | None:
    """The run's `check_gdpr` return value (`pipeline_tasks.Run.as_xcom()`); None when it never ran."""
    from airflow.models.xcom import XComModel

    row = session.scalars(
        XComModel.get_many(run_id=run_id, key="return_value", task_ids=CHECK_TASK, dag_ids=dag_id, limit=1)
    ).first()
    if row is None:
        return None
    from airflow.sdk import serde

    # Values the task SDK wrote come back as JSON with serde's markers (tuples in the Params): decode them.
    return serde.deserialize(XComModel.deserialize_value(row))


def read_page(checked: Mapping[str, Any]) -> tuple[str, bytes | None]:
    """(URI, bytes or None) of the run's page, through the lake's store (S3 with the DAG's connection)."""
    from fruits import lake, pipeline_tasks, report_page

    run = pipeline_tasks.Run.from_xcom(checked)
    store = pipeline_tasks.open_lake(run.settings, pipeline_tasks.lake_client(run.settings))
    uri = lake.reports_uri(pipeline_tasks.lake_root(run.settings), run.batch) + report_page.PAGE
    return uri, store.read_or_none(uri)


def _message(text: str, status: int) -> HTMLResponse:
    import html

    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>Run report</title><p>{html.escape(text)}</p>",
        status_code=status,
        headers=PAGE_HEADERS,
    )


def serve(
    dag_id: str,
    run_id: str,
    checked: Mapping[str, Any] | None,
    reader: Callable[[Mapping[str, Any]], tuple[str, bytes | None]] = read_page,
) -> HTMLResponse:
    if not checked or "params" not in checked or "settings" not in checked:
        return _message(
            f"Run {run_id} of {dag_id} has no run report: it is not a Fruits! pipeline run, or it "
            "stopped before its first task.",
            404,
        )
    uri, page = reader(checked)
    if page is None:
        return _message(
            f"No run report page at {uri} yet: the report_cost task writes it at the end of the run "
            "(a run that stopped before the jobs has none).",
            404,
        )
    return HTMLResponse(page, headers=PAGE_HEADERS)


can_read_run = requires_access_dag("GET", DagAccessEntity.RUN)
app = FastAPI(title="Fruits! run report pages")


@app.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse, dependencies=[Depends(can_read_run)])
def run_report_page(dag_id: str, run_id: str, session: SessionDep) -> HTMLResponse:
    """The batch's run_report.html for this DAG run, as the lake holds it."""
    return serve(dag_id, run_id, run_checked(session, dag_id, run_id))


class FruitsReportPlugin(AirflowPlugin):
    # Lists, as Airflow's plugin manager reads (and edits) them.
    name = "fruits_report_page"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Fruits! run report pages"}]  # noqa: RUF012
    # A tab on every DAG run's page; runs of other DAGs get a one-line "no run report".
    external_views = [  # noqa: RUF012
        {
            "name": "Run report",
            "href": URL_PREFIX.lstrip("/") + "/dags/{DAG_ID}/runs/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "fruits-run-report",
        }
    ]
