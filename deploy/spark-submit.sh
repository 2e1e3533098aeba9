#!/usr/bin/env bash
# Submit any lakecurate command to Spark, with the code packaged for the cluster.
#
#   deploy/spark-submit.sh COMMAND [ARGS ...]        e.g. deploy/spark-submit.sh embed --batch-size 256
#
# Environment (all optional):
#   SPARK_MASTER            master URL (default local[*]): spark://host:7077, yarn, k8s://https://...
#   SPARK_SUBMIT            the spark-submit to run (default: pyspark's own, next to this venv's pyspark)
#   LAKECURATE_PYTHON       Python with lakecurate's dependencies (default: <repo>/.venv/bin/python)
#   LAKECURATE_PACKAGE      how the code reaches executors:
#                             zip  (default) the project built as a wheel and shipped with --py-files;
#                                  torch/open_clip/... must already be installed on every node
#                             venv a venv-pack archive of LAKECURATE_PYTHON's venv shipped with
#                                  --archives (Spark's advice for native dependencies like torch);
#                                  needs `pip install venv-pack` and a non-editable install
#                             none nothing shipped: the nodes run the Docker image (deploy/docker)
#   LAKECURATE_DIST         where packages are built (default <repo>/dist)
#   LAKECURATE_GPU          1: one GPU per executor and per task (embed); Spark finds GPUs with
#                           deploy/gpu-discovery.sh and embed picks TaskContext.resources()["gpu"]
#   LAKECURATE_TASK_GPUS    GPU share per task when LAKECURATE_GPU=1 (default 1; 0.5 = 2 tasks/GPU)
#   LAKECURATE_SUBMIT_ARGS  extra spark-submit options, e.g. "--executor-memory 8g"
#   LAKECURATE_DRY_RUN      1: print the spark-submit command line and exit
#
# The master is passed to spark-submit and to lakecurate (`--master`), because
# lakecurate's session builder sets the master from its own config. Note that
# spark-submit merges the Python driver's stderr into its stdout.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,25p' "${BASH_SOURCE[0]}" >&2; exit 2; }
COMMAND=$1
shift

MASTER=${SPARK_MASTER:-local[*]}
PACKAGE=${LAKECURATE_PACKAGE:-zip}
DIST=${LAKECURATE_DIST:-$REPO/dist}
PY=${LAKECURATE_PYTHON:-$REPO/.venv/bin/python}
[[ -x $PY ]] || PY=$(command -v python3)
if [[ -z ${SPARK_SUBMIT:-} ]]; then
  SPARK_SUBMIT=$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')
fi
# The driver listens where the executors can reach it: loopback for local mode and a
# loopback master, else this host's address on the route to the master
# (lakecurate.runtime.session.driver_host); SPARK_DRIVER_HOST / SPARK_LOCAL_IP win.
if [[ -z ${SPARK_LOCAL_IP:-} ]]; then
  SPARK_LOCAL_IP=$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import sys; from lakecurate.runtime.session import driver_host; print(driver_host(sys.argv[1]))' "$MASTER" 2>/dev/null || true)
  if [[ -n $SPARK_LOCAL_IP ]]; then export SPARK_LOCAL_IP; fi
fi

build_zip() {
  # Rebuild only when a source file is newer than the zip.
  local zip=$DIST/lakecurate.zip
  if [[ ! -f $zip ]] || [[ -n $(find "$REPO/lakecurate" "$REPO/jobs" "$REPO/udfs" "$REPO/schemas" "$REPO/pyproject.toml" -newer "$zip" -print -quit) ]]; then
    rm -rf "$DIST/wheel" && mkdir -p "$DIST/wheel"
    # setuptools builds in REPO/build and never deletes there: a module that moved
    # would ship twice, the stale copy first
    rm -rf "$REPO/build"
    "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIST/wheel" "$REPO" >&2
    # a pure-Python wheel is a zip with the package at its root: what --py-files wants
    cp "$DIST"/wheel/lakecurate-*.whl "$zip.tmp" && mv "$zip.tmp" "$zip"
  fi
  echo "$zip"
}

build_venv() {
  local archive=$DIST/lakecurate-venv.tar.gz
  if [[ ! -f $archive ]]; then
    "$PY" -m venv_pack --help >/dev/null 2>&1 || {
      echo "error: LAKECURATE_PACKAGE=venv needs venv-pack: $PY -m pip install venv-pack" >&2; exit 2; }
    mkdir -p "$DIST"
    "$PY" -m venv_pack --python-prefix "$(dirname "$(dirname "$PY")")" -o "$archive" >&2
  fi
  echo "$archive"
}

args=(--master "$MASTER" --name "lakecurate-$COMMAND"
      --conf spark.ui.showConsoleProgress=false --conf "spark.log.level=${SPARK_LOG_LEVEL:-WARN}"
      ${SPARK_DRIVER_HOST:+--conf "spark.driver.host=$SPARK_DRIVER_HOST"})
if [[ -z ${SPARK_DRIVER_HOST:-} && -n ${SPARK_LOCAL_IP:-} ]]; then
  args+=(--conf "spark.driver.host=$SPARK_LOCAL_IP")
fi
case $PACKAGE in
  zip)  args+=(--py-files "$(build_zip)")
        export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY} ;;
  venv) args+=(--archives "$(build_venv)#environment")
        export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY} PYSPARK_PYTHON=./environment/bin/python ;;
  none) export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY} ;;
  *)    echo "error: LAKECURATE_PACKAGE must be zip, venv or none, got '$PACKAGE'" >&2; exit 2 ;;
esac
if [[ ${LAKECURATE_GPU:-0} == 1 ]]; then
  args+=(--conf spark.executor.resource.gpu.amount=1
         --conf "spark.task.resource.gpu.amount=${LAKECURATE_TASK_GPUS:-1}"
         --conf "spark.executor.resource.gpu.discoveryScript=$REPO/deploy/gpu-discovery.sh")
fi
# shellcheck disable=SC2206  # word splitting of the extra options is intended
[[ -n ${LAKECURATE_SUBMIT_ARGS:-} ]] && args+=(${LAKECURATE_SUBMIT_ARGS})

cmd=("$SPARK_SUBMIT" "${args[@]}" "$REPO/lakecurate/cli.py" "$COMMAND" --master "$MASTER" "$@")
if [[ ${LAKECURATE_DRY_RUN:-0} == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
