#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript):
# prints {"name": "gpu", "addresses": ["0", "1", ...]} for the GPUs nvidia-smi sees.
set -euo pipefail
ids=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | paste -sd, - || true)
addresses=""
IFS=, read -ra list <<< "$ids"
for i in "${list[@]}"; do addresses+="${addresses:+,}\"$i\""; done
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
