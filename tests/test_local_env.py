"""The local target's spark-submit gets no Airflow secret: no database URL or password, Fernet key, JWT or
API secret, connection or Variable; what Spark needs (PATH, JAVA_HOME, the jobs' Python) stays."""

from __future__ import annotations

import sys

from fruits import local_target

AIRFLOW_SECRETS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:hunter2@db/airflow",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "cat /run/secrets/db",
    "AIRFLOW__CORE__FERNET_KEY": "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI=",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret",
    "AIRFLOW__API__SECRET_KEY": "api-secret",
    "AIRFLOW__CORE__INTERNAL_API_SECRET_KEY": "internal",
    "AIRFLOW_CONN_AWS_DEFAULT": "aws://AKIA:secret@",
    "AIRFLOW_VAR_FRUITS_BUCKET": "b",
    "POSTGRES_PASSWORD": "hunter2",
    "PGPASSWORD": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin",
}
NEEDED = {
    "PATH": "/usr/bin:/bin",
    "JAVA_HOME": "/usr/lib/jvm/java-17",
    "HOME": "/home/airflow",
    "LANG": "C.UTF-8",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "KERAS_HOME": "/models",
}


def test_the_job_environment_carries_no_airflow_secret_and_keeps_what_spark_needs():
    env = local_target.job_environment({**AIRFLOW_SECRETS, **NEEDED})
    assert not set(env) & set(AIRFLOW_SECRETS), set(env) & set(AIRFLOW_SECRETS)
    assert not [v for v in env.values() if "hunter2" in v or "secret" in v.lower()]
    assert {k: env[k] for k in NEEDED} == NEEDED
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == sys.executable


def test_the_spark_submit_process_really_gets_that_environment(monkeypatch, tmp_path):
    """run() hands the filtered environment to the child process (read back from the child itself)."""
    for name, value in AIRFLOW_SECRETS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.txt"
    local_target.run(
        [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write('\\n'.join(os.environ))"], name="env-probe"
    )
    seen = set(out.read_text().split("\n"))
    assert not seen & set(AIRFLOW_SECRETS) and "PATH" in seen and "PYSPARK_PYTHON" in seen


OTHER_SECRETS = {
    "DATABASE_URL": "postgresql://app:hunter2@db/app",
    "CELERY_BROKER_URL": "redis://:hunter2@redis:6379/0",
    "AMQP_URL": "amqp://guest:hunter2@rabbit//",
    "OPENAI_API_KEY": "sk-hunter2",
    "STRIPE_APIKEY": "hunter2",
    "GITHUB_TOKEN": "ghp_hunter2",
    "SMTP_PASSWORD": "hunter2",
    "APP_SECRET": "hunter2",
    "SENTRY_DSN": "https://hunter2@sentry.io/1",
    "SPARK_AUTH_SECRET": "hunter2",  # an allowed family, a credential's name
    "HADOOP_TOKEN_FILE_LOCATION": "/run/hunter2",
}


def test_only_allow_listed_variables_reach_the_job_whatever_they_are_called():
    """Issue 23 item 10: a deny-list of Airflow's names let DATABASE_URL, broker URLs and API keys through."""
    spark_needs = {"TF_CPP_MIN_LOG_LEVEL": "2", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/p", "HADOOP_CONF_DIR": "/h"}
    env = local_target.job_environment({**OTHER_SECRETS, **NEEDED, **spark_needs})
    assert not set(env) & set(OTHER_SECRETS), set(env) & set(OTHER_SECRETS)
    assert not [v for v in env.values() if "hunter2" in v]
    assert {k: env[k] for k in {**NEEDED, **spark_needs}} == {**NEEDED, **spark_needs}
