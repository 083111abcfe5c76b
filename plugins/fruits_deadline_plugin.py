"""Airflow plugin: registers the night's deadline reference (fruits.deadline.NightDeadline), which the
scheduler evaluates when it creates a run of fruits_pipeline (Airflow loads custom deadline references
from plugins only: airflow/serialization/helpers.py, find_registered_custom_deadline_reference)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from fruits.deadline import NightDeadline


class FruitsDeadlinePlugin(AirflowPlugin):
    name = "fruits_night_deadline"
    deadline_references = [NightDeadline]  # noqa: RUF012  (a list, as Airflow's plugin manager reads it)
