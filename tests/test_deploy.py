"""deploy/: what cron, systemd, Airflow, Kubernetes and Docker run exists and agrees."""

from __future__ import annotations

import ast
import configparser
import json
import os
import py_compile
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
INSTALL = "/opt/lakecurate"  # where the units and manifests expect the repository


def cron_command() -> list[str]:
    for line in (DEPLOY / "cron" / "lakecurate-refresh").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]:
            fields = line.split(None, 6)  # 5 time fields, user, command
            assert fields[:5] == ["30", "2", "*", "*", "*"]
            assert fields[5] == "lakecurate"
            return shlex.split(fields[6].split(">>")[0])
    raise AssertionError("no cron entry")


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read_string((DEPLOY / "systemd" / name).read_text())
    return cp


def test_cron_and_systemd_run_the_same_command_and_it_exists():
    cron = cron_command()
    service = unit("lakecurate-refresh.service")
    assert shlex.split(service["Service"]["ExecStart"]) == cron
    assert cron[0] == f"{INSTALL}/deploy/refresh.sh"
    script = REPO / Path(cron[0]).relative_to(INSTALL)
    assert script.exists() and os.access(script, os.X_OK)
    timer = unit("lakecurate-refresh.timer")
    assert timer["Timer"]["Unit"] == "lakecurate-refresh.service"
    assert "02:30" in timer["Timer"]["OnCalendar"]
    assert service["Service"]["Type"] == "oneshot"


def test_shell_scripts_parse():
    for script in ["refresh.sh", "spark-submit.sh", "gpu-discovery.sh", "docker/entrypoint.sh"]:
        done = subprocess.run(["bash", "-n", str(DEPLOY / script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)


def test_gpu_discovery_prints_spark_resource_json():
    out = subprocess.run([str(DEPLOY / "gpu-discovery.sh")], capture_output=True, text=True)
    doc = json.loads(out.stdout)
    assert doc["name"] == "gpu" and isinstance(doc["addresses"], list)


def test_airflow_dag_compiles_and_runs_the_cron_command(tmp_path):
    dag = DEPLOY / "airflow" / "lakecurate_refresh.py"
    py_compile.compile(str(dag), cfile=str(tmp_path / "dag.pyc"), doraise=True)
    tree = ast.parse(dag.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    bash = [k for c in calls for k in c.keywords if k.arg == "bash_command"]
    assert len(bash) == 1
    src = ast.unparse(bash[0].value)
    assert "/deploy/refresh.sh --env" in src
    kwargs = {k.arg: k.value for c in calls for k in c.keywords}
    assert ast.literal_eval(kwargs["max_active_runs"]) == 1  # one refresh at a time


def test_k8s_manifest_parses_and_points_at_real_entry_points(tmp_path):
    from lakecurate.cli import COMMANDS
    from lakecurate.runtime.config import load_config

    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "scheduled-refresh.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    app = kinds["ScheduledSparkApplication"]
    assert app["apiVersion"].startswith("sparkoperator.k8s.io/")
    spec = app["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    tmpl = spec["template"]
    main = tmpl["mainApplicationFile"].removeprefix("local://")
    assert (REPO / Path(main).relative_to(INSTALL)).exists()
    assert tmpl["arguments"][0] in COMMANDS and tmpl["arguments"][0] == "refresh"
    assert tmpl["executor"]["gpu"] == {"name": "nvidia.com/gpu", "quantity": 1}
    assert tmpl["sparkConf"]["spark.executor.resource.gpu.amount"] == "1"
    script = tmpl["sparkConf"]["spark.executor.resource.gpu.discoveryScript"]
    assert (REPO / Path(script).relative_to(INSTALL)).exists()
    # the config it mounts is a valid lakecurate config with a shared lease directory
    cfg_file = tmp_path / "lakecurate.yaml"
    cfg_file.write_text(kinds["ConfigMap"]["data"]["lakecurate.yaml"])
    cfg = load_config(cfg_file)
    assert cfg.lake.path.startswith("s3://") and cfg.refresh.lease_dir
    mounts = {m["mountPath"] for m in tmpl["driver"]["volumeMounts"]}
    assert cfg.refresh.lease_dir in mounts
    assert tmpl["arguments"][tmpl["arguments"].index("--config") + 1].startswith("/etc/lakecurate")


def test_dockerfile_copies_what_exists():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    copies = [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies and all((REPO / c).exists() for c in copies), copies
    assert "deploy/docker/entrypoint.sh" in text
    assert "openjdk-17" in text


def test_entry_points_compile(tmp_path):
    for f in ("lakecurate/cli.py", "jobs/refresh.py"):
        py_compile.compile(str(REPO / f), cfile=str(tmp_path / "x.pyc"), doraise=True)


def _submit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **(env or {}))
    return subprocess.run(
        [str(DEPLOY / "spark-submit.sh"), *args], capture_output=True, text=True, env=full
    )


def test_spark_submit_dry_run_packages_the_code_and_passes_the_master(tmp_path):
    env = {"LAKECURATE_DIST": str(tmp_path), "LAKECURATE_DRY_RUN": "1"}
    done = _submit("embed", "--batch-size", "8", env={**env, "SPARK_MASTER": "spark://h:7077"})
    assert done.returncode == 0, done.stderr
    cmd = shlex.split(done.stdout)
    assert cmd[0].endswith("spark-submit")
    assert cmd[cmd.index("--master") + 1] == "spark://h:7077"
    zip_path = Path(cmd[cmd.index("--py-files") + 1])
    i = cmd.index(str(REPO / "lakecurate" / "cli.py"))
    assert cmd[i + 1 :] == ["embed", "--master", "spark://h:7077", "--batch-size", "8"]
    assert "spark.executor.resource.gpu.amount=1" not in cmd
    # the zip is importable on its own, with package data (the tiny model's config)
    names = zipfile.ZipFile(zip_path).namelist()
    assert "lakecurate/jobs/refresh.py" in names and "lakecurate/udfs/clip.py" in names
    assert "lakecurate/udfs/readers/task.py" in names
    assert "lakecurate/sources/discover.py" in names
    assert "lakecurate/udfs/model_configs/lakecurate-tiny.json" in names
    assert "lakecurate/config.py" not in names  # nothing left over from an older layout
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import lakecurate.jobs.refresh as r, lakecurate.udfs.text as t;"
        "from importlib import resources;"
        "print(r.__file__); print(t.__file__);"
        "print((resources.files('lakecurate.udfs') / 'model_configs' / 'lakecurate-tiny.json').is_file());"
        "from lakecurate.curation.models import check_model_name; check_model_name('lakecurate-tiny')"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(zip_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert all(str(zip_path) in x for x in lines[:2]) and lines[2] == "True"


def test_spark_submit_gpu_settings_and_bad_package(tmp_path):
    env = {"LAKECURATE_DIST": str(tmp_path), "LAKECURATE_DRY_RUN": "1", "LAKECURATE_GPU": "1"}
    done = _submit(
        "embed", env={**env, "LAKECURATE_PACKAGE": "none", "LAKECURATE_TASK_GPUS": "0.5"}
    )
    assert done.returncode == 0, done.stderr
    assert "spark.executor.resource.gpu.amount=1" in done.stdout
    assert "spark.task.resource.gpu.amount=0.5" in done.stdout
    assert "--py-files" not in done.stdout
    bad = _submit("embed", env={**env, "LAKECURATE_PACKAGE": "egg"})
    assert bad.returncode == 2 and "zip, venv or none" in bad.stderr
    assert _submit().returncode == 2  # no command: usage


def test_refresh_script_needs_a_lake():
    done = subprocess.run(
        [str(DEPLOY / "refresh.sh")],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LAKECURATE_LAKE"},
    )
    assert done.returncode != 0 and "LAKECURATE_LAKE" in done.stderr
    missing = subprocess.run(
        [str(DEPLOY / "refresh.sh"), "--env", "/nonexistent/refresh.env"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "not readable" in missing.stderr


@pytest.fixture
def installed_command(tmp_path):
    """The cron/systemd command line with this checkout as the install dir, and its env file."""
    env_file = tmp_path / "refresh.env"
    cmd = [c.replace(INSTALL, str(REPO)) for c in cron_command()]
    cmd[cmd.index("/etc/lakecurate/refresh.env")] = str(env_file)
    return cmd, env_file


def test_cron_command_refuses_while_another_refresh_holds_the_lease(installed_command, tmp_path):
    from lakecurate.runtime.lease import Lease

    cmd, env_file = installed_command
    lake = tmp_path / "lake"
    env_file.write_text(
        f"LAKECURATE_LAKE={lake}\nLAKECURATE_DIST={tmp_path / 'dist'}\nLAKECURATE_LOG_DIR={tmp_path}/logs\n"
    )
    with Lease(lake, owner="the-other-refresh", timeout_s=3600):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr  # spark-submit merges the driver's stderr into stdout
    assert done.returncode == 1, out[-3000:]
    assert "another writer holds this lake's lease" in out and "the-other-refresh" in out
    logs = list((tmp_path / "logs").glob("refresh-*.jsonl"))
    assert len(logs) == 1  # the structured log file was written
