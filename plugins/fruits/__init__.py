"""Fruits! pipeline building blocks: plain, Airflow-free functions the DAG wires together."""
