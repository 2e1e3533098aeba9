"""A cluster of real hosts: Linux network namespaces joined by a bridge.

Four hosts, each a namespace with its own address and its own loopback: `master`
(the Spark master and the driver), `w1` and `w2` (one Spark worker each) and `s3` (an
S3 server, moto's). No process shares a local disk path with another for lake data:
the sources, the lake and the published shards all live in the S3 server, which the
workers' Python tasks reach through `lake.storage_options` (spark.executorEnv).

The refresh is submitted with deploy/spark-submit.sh --master spark://<master>:7077
from the master's namespace and must equal the same refresh in local mode. The driver
must advertise an address the workers can reach: the old default, 127.0.0.1, is each
namespace's own loopback, so no executor could ever connect back to it.

Needs root (`ip netns`), as CI has; every process is stopped by pid and every
namespace, veth and bridge it made is deleted by name, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from test_cluster import REPO, _refresh_json, require_cluster_run, spark_home
from test_object_store import CONFIG, _published_uids, _upload

from lakecurate.demo.sample import generate

pytestmark = pytest.mark.cluster


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """Namespaces `lc<tag><name>` on a bridge `lcb<tag>`, addresses 10.A.B.1.. in
    order; the bridge itself gets .254 so this test (in the root namespace) can reach
    the master's UI and the S3 server. `stop()` kills the pids it started and deletes
    what it created, by name."""

    def __init__(self, names: list[str]):
        self.tag = uuid.uuid4().hex[:5]
        self.net = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self.names = names
        self.bridge = f"lcb{self.tag}"
        self.procs: list[subprocess.Popen] = []
        self.made: list[tuple[str, str]] = []  # ("netns"|"link", name), to delete

    def ns(self, name: str) -> str:
        return f"lc{self.tag}{name}"

    def addr(self, name: str) -> str:
        return f"{self.net}.{self.names.index(name) + 1}"

    def start(self) -> Hosts:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns, inside, outside = self.ns(name), f"lcv{self.tag}{i}a", f"lcv{self.tag}{i}b"
            _ip("netns", "add", ns)
            self.made.append(("netns", ns))
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            self.made.append(("link", outside))
            _ip("link", "set", inside, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
        return self

    def spawn(self, name: str, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(name), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, name: str, cmd: list[str], env: dict, timeout: float):
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(name), *cmd],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        for p in reversed(self.procs):  # each in its own session: its children too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for kind, name in reversed(self.made):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip(kind, "del", name)


def _wait(what: str, ok, timeout: float, procs: list[subprocess.Popen], logs) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a process exited early:\n{logs()}")
        with contextlib.suppress(OSError, ValueError):
            if ok():
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not ready in {timeout} s:\n{logs()}")


@pytest.fixture
def hosts(request, tmp_path):
    require_cluster_run(request.config)
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    h = Hosts(["master", "w1", "w2", "s3"]).start()
    try:
        yield h
    finally:
        h.stop()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert h.tag not in left


def test_refresh_on_a_cluster_of_namespaced_hosts_equals_local_mode(hosts, tmp_path, monkeypatch):
    work = tmp_path / "hosts"
    work.mkdir()

    def logs() -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}"
            for f in sorted(work.glob("*.log"))
        )

    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPARK_"))}
    base.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    base.update(SPARK_HOME=str(spark_home()), HF_HUB_OFFLINE="1")

    # the S3 server, on its own host
    s3 = f"http://{hosts.addr('s3')}:9000"
    moto = [sys.executable, "-m", "moto.server", "-H", hosts.addr("s3"), "-p", "9000"]
    hosts.spawn("s3", moto, base, work / "s3.log")
    _wait("s3", lambda: urllib.request.urlopen(s3, timeout=2), 60, hosts.procs, logs)

    # the Spark master and two workers, each on its own host with its own work dir
    master = f"spark://{hosts.addr('master')}:7077"
    spark_class = str(spark_home() / "bin" / "spark-class")
    ui = f"http://{hosts.addr('master')}:8080/json/"
    env = dict(base, SPARK_LOCAL_IP=hosts.addr("master"), SPARK_LOG_DIR=str(work / "logs"))
    hosts.spawn(
        "master",
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", hosts.addr("master")],
        env,
        work / "master.log",
    )
    for w in ("w1", "w2"):
        wenv = dict(base, SPARK_LOCAL_IP=hosts.addr(w), SPARK_WORKER_DIR=str(work / w))
        cmd = [spark_class, "org.apache.spark.deploy.worker.Worker", master]
        cmd += ["--host", hosts.addr(w), "--cores", "1", "--memory", "1g"]
        hosts.spawn(w, [*cmd, "--work-dir", str(work / w)], wenv, work / f"{w}.log")

    def alive() -> bool:
        with urllib.request.urlopen(ui, timeout=2) as r:
            return json.loads(r.read()).get("aliveworkers") == 2

    _wait("cluster", alive, 180, hosts.procs, logs)

    # sources in the bucket; the config carries the store's settings to every executor
    options = {
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "hosts-test",
        "AWS_SECRET_ACCESS_KEY": "hosts-test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    for k, v in options.items():
        monkeypatch.setenv(k, v)
    import pyarrow.fs as pafs

    pafs.S3FileSystem(
        access_key="hosts-test",
        secret_key="hosts-test",
        region="us-east-1",
        endpoint_override=s3,
        scheme="http",
        allow_bucket_creation=True,
    ).create_dir("lake")
    src = tmp_path / "src"
    generate(n=60, seed=41, prefix="h").write_webdataset(src, shard_size=20)
    _upload(src, "s3://lake/sources")
    config = tmp_path / "lakecurate.yaml"
    cfg = {
        **{k: v for k, v in CONFIG.items() if k != "spark"},
        "lake": {"storage_options": options},
    }
    cfg["spark"] = {"shuffle_partitions": 2, "arrow_batch_rows": 256}
    config.write_text(yaml.safe_dump(cfg))

    # the refresh, submitted from the master's host to the cluster
    submit_env = dict(base, SPARK_MASTER=master, LAKECURATE_DIST=str(tmp_path / "dist"))
    submit_env["LAKECURATE_SUBMIT_ARGS"] = "--executor-memory 1g --total-executor-cores 2"
    args = ["refresh", "s3://lake/sources", "--lake", "s3://lake/lake", "--config", str(config)]
    done = hosts.run(
        "master", [str(REPO / "deploy" / "spark-submit.sh"), *args, "--json"], submit_env, 900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + logs()
    doc = _refresh_json(done.stdout)
    # the default recipe reads no concepts, so that stage is skipped
    assert {s["stage"]: s["status"] for s in doc["counts"]["stages"]} == {
        **dict.fromkeys(("ingest", "embed", "dedup", "select", "publish"), "ok"),
        "concepts": "skipped",
    }, doc["counts"]
    with urllib.request.urlopen(ui, timeout=5) as r:
        apps = json.loads(r.read())["completedapps"]
    assert apps and all(a["state"] == "FINISHED" for a in apps)  # it ran on this cluster

    # the same refresh in local mode, on local disk
    local = subprocess.run(
        [sys.executable, "-m", "lakecurate.cli", "refresh", str(src), "--json"]
        + ["--lake", str(tmp_path / "local"), "--config", str(config), "--master", "local[2]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    here = json.loads(local.stdout.strip().splitlines()[-1])
    assert [s["rows_out"] for s in doc["counts"]["stages"]] == [
        s["rows_out"] for s in here["counts"]["stages"]
    ]
    remote_uids = _published_uids("s3://lake/lake/_published/nightly/v1")
    assert remote_uids and sorted(remote_uids) == sorted(
        _published_uids(str(tmp_path / "local" / "_published" / "nightly" / "v1"))
    )
