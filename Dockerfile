# The Airflow image of docker-compose.yaml: Airflow 3 (api-server, scheduler, dag-processor,
# triggerer) AND everything the local target's Spark jobs need, because LocalExecutor runs the
# tasks -- spark-submit included -- inside the scheduler's container.
#
# Same Python (3.11) and same Debian release (bookworm: openjdk-17) as the development machines,
# and the same Python packages at the same versions: requirements/dev.lock constrains the install.
FROM python:3.11-slim-bookworm

# Java for Spark; procps because Spark's launch scripts call `ps`.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

ENV AIRFLOW_HOME=/opt/airflow \
    PYTHONPATH=/opt/airflow/plugins \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# What the Airflow side and the EMR nodes install (requirements/airflow.txt, spark-node.txt),
# pyspark (EMR ships its own; here the local target needs it) and the PostgreSQL drivers
# (psycopg2 for the ORM, asyncpg for Airflow's async engine), every version from the lock.
COPY requirements/ /tmp/requirements/
RUN pip install --no-cache-dir -c /tmp/requirements/dev.lock \
      -r /tmp/requirements/airflow.txt -r /tmp/requirements/spark-node.txt \
      pyspark psycopg2-binary asyncpg \
 && rm -rf /tmp/requirements

# Airflow's usual uid; group 0 so an AIRFLOW_UID override can still write AIRFLOW_HOME.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow
USER 50000
WORKDIR /opt/airflow

# dags/, plugins/, spark_jobs/ (and bootstrap/, requirements/, which the code publisher hashes)
# are mounted by docker-compose.yaml; each service's command is set there.
CMD ["airflow", "version"]
