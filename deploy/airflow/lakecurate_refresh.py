"""Airflow DAG: the lakecurate nightly refresh.

One task, because a refresh is one unit of work guarded by the lake's lease:
it ingests new sources, embeds new uids, dedups incrementally, re-selects and
publishes a new dataset version only when the selection changed. Retrying is
safe (every stage is idempotent); a retry that finds a live lease exits 1 and
is retried later. `max_active_runs=1` keeps Airflow from starting a second one.

Configure with Airflow Variables (or edit the defaults below):
  lakecurate_home      where the repository/image puts lakecurate (/opt/lakecurate)
  lakecurate_env_file  the env file deploy/refresh.sh reads (/etc/lakecurate/refresh.env)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

HOME = "{{ var.value.get('lakecurate_home', '/opt/lakecurate') }}"
ENV_FILE = "{{ var.value.get('lakecurate_env_file', '/etc/lakecurate/refresh.env') }}"

with DAG(
    dag_id="lakecurate_refresh",
    description="Nightly incremental curation of image-text pairs (lakecurate refresh)",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=15)},
    tags=["lakecurate"],
) as dag:
    BashOperator(
        task_id="refresh",
        # the trailing space stops Airflow from treating a `.sh` command as a template file
        bash_command=f"{HOME}/deploy/refresh.sh --env {ENV_FILE} ",
        execution_timeout=timedelta(hours=12),
    )
