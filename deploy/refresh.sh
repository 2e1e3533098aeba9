#!/usr/bin/env bash
# The nightly refresh, exactly as cron (deploy/cron/lakecurate-refresh) and systemd
# (deploy/systemd/lakecurate-refresh.service) run it:
#
#   deploy/refresh.sh --env /etc/lakecurate/refresh.env [extra refresh args ...]
#
# The env file sets LAKECURATE_LAKE (required) and optionally LAKECURATE_CONFIG,
# LAKECURATE_LOG_DIR (default <lake>/_logs), LAKECURATE_NAME (dataset name), and
# anything deploy/spark-submit.sh reads (SPARK_MASTER, LAKECURATE_PACKAGE, ...).
#
# Exit codes (DESIGN.md): 0 done (or nothing new to publish), 1 failed or another
# refresh holds the lake's lease, 2 bad usage or config.
set -euo pipefail

if [[ ${1:-} == --env ]]; then
  [[ -r ${2:-} ]] || { echo "error: env file '${2:-}' not readable" >&2; exit 2; }
  set -a
  # shellcheck disable=SC1090
  source "$2"
  set +a
  shift 2
fi
: "${LAKECURATE_LAKE:?set LAKECURATE_LAKE (the lake path or URI) in the env file}"
LOG_DIR=${LAKECURATE_LOG_DIR:-$LAKECURATE_LAKE/_logs}
mkdir -p "$LOG_DIR"

args=(--lake "$LAKECURATE_LAKE")
[[ -n ${LAKECURATE_CONFIG:-} ]] && args+=(--config "$LAKECURATE_CONFIG")
[[ -n ${LAKECURATE_NAME:-} ]] && args+=(--name "$LAKECURATE_NAME")
args+=(--log-json --log-file "$LOG_DIR/refresh-$(date -u +%Y%m%dT%H%M%SZ).jsonl")

exec "$(dirname "${BASH_SOURCE[0]}")/spark-submit.sh" refresh "${args[@]}" "$@"
