"""Person-facing commands (`python -m fruits.cli.<command> --help`): costs, erase, upload, matrix, demo.

Nothing here runs on an Airflow worker: the DAG and `fruits.pipeline_tasks` never import this package, and
`plugins/.airflowignore` keeps Airflow's plugin loader from importing it (it imports every .py under plugins/).
"""
