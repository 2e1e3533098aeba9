#!/usr/bin/env bash
# Entry point of the lakecurate image. Spark on Kubernetes starts its pods with a
# first argument of `driver` or `executor` and passes the rest in the environment
# (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...); anything else is run as a command.
set -euo pipefail

mode=${1:-}
case $mode in
  driver)
    shift
    # the operator submits in cluster mode; inside the driver pod Spark runs in client mode
    exec "$SPARK_HOME/bin/spark-submit" \
      --deploy-mode client \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      "$@"
    ;;
  executor)
    shift
    exec java "-Xms${SPARK_EXECUTOR_MEMORY:-1g}" "-Xmx${SPARK_EXECUTOR_MEMORY:-1g}" \
      -cp "$SPARK_HOME/conf:$SPARK_HOME/jars/*" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME:-}"
    ;;
  "")
    exec lakecurate --help
    ;;
  *)
    exec "$@"
    ;;
esac
