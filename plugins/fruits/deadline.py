"""The night's deadline, as an Airflow deadline alert: a run must be done by `fruits_deadline` (HH:MM,
Europe/Paris, default 07:00). `NightDeadline` is evaluated when the run is created: the first such
hour after it (the 03:00 run: 07:00 the same morning). Past it, Airflow calls `night_overdue`, which
publishes to the SNS topic `fruits_deadline_sns_topic` (the operator subscribes e-mail, chat, paging to
it) or, unset, logs an error. Registered with Airflow by plugins/fruits_deadline_plugin.py.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import DeadlineAlert, SyncCallback
from airflow.sdk.definitions.deadline import BaseDeadlineReference

from fruits.settings import VARIABLE_PREFIX, PipelineSettings, load_settings, parse_deadline

log = logging.getLogger(__name__)

TIMEZONE = ZoneInfo("Europe/Paris")


def deadline_after(moment: dt.datetime, hour: dt.time) -> dt.datetime:
    """The first `hour` (Paris wall clock) strictly after `moment`, in UTC."""
    local = moment.astimezone(TIMEZONE)
    for day in (local.date(), local.date() + dt.timedelta(days=1)):
        candidate = dt.datetime.combine(day, hour, tzinfo=TIMEZONE)
        if candidate > local:
            return candidate.astimezone(dt.UTC)
    raise AssertionError("unreachable: tomorrow's hour is always later")


class NightDeadline(BaseDeadlineReference):
    """The first `fruits_deadline` after the run is created (read then: a changed Variable counts from the next run)."""

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> dt.datetime:
        from airflow.configuration import ensure_secrets_loaded
        from airflow.utils import timezone

        key, value = VARIABLE_PREFIX + "deadline", None
        # Every secrets backend in Airflow's order, the metastore through the scheduler's own session:
        # Variable.get would open and close the scoped session the new run belongs to.
        for backend in ensure_secrets_loaded():
            extra = {"session": session} if type(backend).__name__ == "MetastoreBackend" else {}
            if (value := backend.get_variable(key, **extra)) is not None:
                break
        value = value or PipelineSettings.deadline
        try:
            hour = parse_deadline(value)
        except ValueError as error:  # the run still gets a deadline; check_gdpr fails the run on the same error
            log.error("%s: the default %s is used", error, PipelineSettings.deadline)
            hour = parse_deadline(PipelineSettings.deadline)
        return deadline_after(timezone.utcnow(), hour)


def overdue_message(context: Mapping[str, Any] | None) -> str:
    """One line naming the run, its night, its state and the deadline it missed."""
    run = (context or {}).get("dag_run") or {}
    missed = (context or {}).get("deadline") or {}
    return (
        f"{run.get('dag_id', 'fruits_pipeline')} run {run.get('dag_run_id')} (night {run.get('partition_key')}) "
        f"is not done by its deadline {missed.get('deadline_time')}: state {run.get('state')}. "
        "See the run's task logs and docs/operations.md, 'When a run fails'."
    )


def night_overdue(context: Mapping[str, Any] | None = None, **_: Any) -> str:
    """The deadline alert's callback (run by the executor): the SNS topic if one is set, else the log."""
    from airflow.sdk import Variable

    settings = load_settings(Variable.get)
    message = overdue_message(context)
    if settings.deadline_sns_topic:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        hook = SnsHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region)
        hook.publish_to_target(settings.deadline_sns_topic, message, subject="Fruits! night past its deadline")
    log.error("deadline missed: %s", message)
    return message


def alert() -> DeadlineAlert:
    """The DAG's deadline: NightDeadline, no extra interval, night_overdue."""
    return DeadlineAlert(
        reference=NightDeadline(), interval=dt.timedelta(0), callback=SyncCallback(night_overdue), name="night"
    )
