"""A real Spark standalone cluster on 127.0.0.1: a master and two 1-core workers.

Started from pyspark's own `bin/spark-class` (pip's pyspark has no `sbin/`), jobs
are submitted with `spark-submit --master spark://127.0.0.1:PORT`, and every
process the harness started is stopped by its pid, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(workdir: Path) -> dict[str, str]:
    """Environment for every cluster process: loopback, this venv's Python, logs in workdir."""
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOG_DIR=str(workdir / "logs"),
        SPARK_WORKER_DIR=str(workdir / "work"),
        HF_HUB_OFFLINE="1",
    )
    return env


class StandaloneCluster:
    """Master + workers as child processes; `stop()` ends exactly the pids it started."""

    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "2g"):
        self.workdir = workdir
        self.workers, self.cores, self.memory = workers, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.env = cluster_env(workdir)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed by the child
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 300) -> StandaloneCluster:
        for d in ("logs", "work"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self._spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--webui-port", str(self.ui_port)),
        )
        for i in range(self.workers):
            self._spawn(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                *("--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory),
                *("--webui-port", str(free_port()), "--work-dir", str(self.workdir / "work")),
            )
        self._wait_alive(timeout)
        return self

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.loads(r.read())

    def _wait_alive(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a cluster process exited early:\n{self.logs()}")
            with contextlib.suppress(OSError, ValueError):
                if self.state().get("aliveworkers") == self.workers:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"cluster did not come up in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for f in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        """Workers first (they stop their executors), then the master; by pid only."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def submit(
        self, app: str | Path, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """`spark-submit --master spark://... app args` against this cluster."""
        cmd = [
            str(spark_home() / "bin" / "spark-submit"),
            *("--master", self.url),
            *("--conf", "spark.ui.enabled=false"),
            *("--conf", "spark.driver.host=127.0.0.1"),
            *("--executor-memory", "1g", "--total-executor-cores", str(self.workers * self.cores)),
            str(app),
            *args,
        ]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def applications(self) -> list[dict]:
        return self.state().get("completedapps", []) + self.state().get("activeapps", [])


@contextlib.contextmanager
def running_cluster(workdir: Path, **kw):
    cluster = StandaloneCluster(workdir, **kw)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def require_cluster_run(config) -> None:
    """A cluster costs minutes on a 2-core machine: run it with `-m cluster` or the env flag."""
    selected = "cluster" in (config.getoption("markexpr") or "")
    if not selected and os.environ.get("LAKECURATE_CLUSTER_TESTS") != "1":
        pytest.skip("real-cluster test: run `make cluster-test` (pytest -m cluster)")


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    require_cluster_run(request.config)
    with running_cluster(tmp_path_factory.mktemp("cluster")) as c:
        pids = [p.pid for p in c.procs]
        yield c
    for pid in pids:  # stop() ended every process it started
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


WRITE_APP = """
import sys
from pyspark.sql import SparkSession, functions as F
from lakecurate.deltaio.lake import Commit, Lake
from lakecurate.runtime.session import register_sources
from lakecurate.schemas import TABLES

spark = SparkSession.builder.getOrCreate()
register_sources(spark)
lake = Lake(sys.argv[1])
df = spark.range(0, 1000, numPartitions=4).select(
    F.sha2(F.col("id").cast("string"), 256).alias("uid"),
    F.lit("m").alias("model_id"),
)
rest = [c for c in TABLES["embeddings"].columns if c not in ("uid", "model_id")]
df = df.select("uid", "model_id", *[F.lit(None).alias(c) for c in rest])
pids = df.rdd.mapPartitions(lambda it: [__import__("os").getpid()]).distinct().collect()
v = lake.write(df, "embeddings", Commit("cluster-test", "r1"))
print("RESULT", v, spark.sparkContext.master, len(set(pids)))
spark.stop()
"""


def test_cluster_runs_a_lake_write_on_two_executors(cluster, tmp_path):
    app = tmp_path / "write_app.py"
    app.write_text(WRITE_APP)
    lake_path = tmp_path / "lake"
    done = cluster.submit(app, str(lake_path))
    assert done.returncode == 0, done.stderr[-4000:] + cluster.logs()
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][0]
    _, version, master, _pids = line.split()
    assert version == "0" and master == cluster.url
    from deltalake import DeltaTable

    dt = DeltaTable(str(lake_path / "embeddings"))
    assert dt.version() == 0
    n = sum(int(a) for a in dt.get_add_actions(flatten=True).column("num_records").to_pylist())
    assert n == 1000
    # the work really ran on the cluster's executors (one per worker)
    app_info = [a for a in cluster.applications() if a.get("state") == "FINISHED"]
    assert app_info, cluster.state()


def _refresh_json(stdout: str) -> dict:
    """The `--json` document among the driver's output (spark-submit merges its stderr in)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and '"job": "refresh"' in line:
            return json.loads(line)
    raise AssertionError(f"no refresh JSON in the output:\n{stdout[-4000:]}")


def test_refresh_via_spark_submit_on_the_cluster_equals_local_mode(cluster, spark, tmp_path):
    """deploy/spark-submit.sh (code shipped as a --py-files zip) against the standalone
    cluster, then the same refresh in local mode: equal tables and dataset version."""
    import yaml
    from test_refresh_crash import CONFIG, published, table_differences

    from lakecurate.deltaio.lake import Lake
    from lakecurate.demo.sample import generate
    from lakecurate.jobs import refresh
    from lakecurate.runtime.config import load_config
    from lakecurate.runtime.logs import read_events

    src = tmp_path / "src"
    generate(n=40, seed=31, prefix="c").write_webdataset(src, shard_size=20)
    config = tmp_path / "lakecurate.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in CONFIG.items() if k != "spark"}))
    on_cluster, local = tmp_path / "cluster-lake", tmp_path / "local-lake"
    env = dict(cluster.env, SPARK_MASTER=cluster.url, LAKECURATE_DIST=str(tmp_path / "dist"))
    log_file = tmp_path / "refresh.jsonl"
    args = ["--lake", str(on_cluster), "--config", str(config), "--json"]
    args += [str(src), "--format", "webdataset", "--log-file", str(log_file)]
    done = subprocess.run(
        [str(REPO / "deploy" / "spark-submit.sh"), "refresh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + cluster.logs()
    result = _refresh_json(done.stdout)
    assert result["counts"]["published"] and result["counts"]["dataset_version"] == 1
    started = [e["msg"] for e in read_events(log_file) if "started Spark" in e["msg"]]
    assert started and started[0].endswith(cluster.url)  # really ran against the cluster
    apps = [a["name"] for a in cluster.applications() if a.get("state") == "FINISHED"]
    assert "lakecurate" in apps  # spark.app_name of the config (it overrides --name)

    cfg = load_config(
        config,
        {
            "lake.path": str(local),
            "spark.master": "local[2]",
            "sources": [{"uri": str(src), "format": "webdataset"}],
        },
    )
    assert refresh.run(spark, cfg).counts["dataset_version"] == 1
    a, b = Lake(str(on_cluster)), Lake(str(local))
    assert table_differences(spark, a, b) == {}
    assert published(spark, a, "nightly") == published(spark, b, "nightly")
