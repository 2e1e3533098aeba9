#!/usr/bin/env bash
# Render a lakecurate HTML report in headless Chromium and save a PNG screenshot.
#
#   deploy/report_screenshot.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# Needs Debian's chromium (`apt-get install -y chromium`; override with $CHROMIUM).
# The report is self-contained (inline SVG plots, data-URI thumbnails), so the page
# needs no network: this is a check that it really renders. Runs as root too
# (--no-sandbox), and uses a throwaway profile so it never touches a user's one.
# Exit codes: 0 screenshot written, 2 bad usage / chromium missing, 1 render failed.
set -euo pipefail

report="${1:-}"
out="${2:-${report%.html}.png}"
size="${3:-1280x4000}"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [[ -z "$report" || ! -f "$report" ]]; then
  echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT] (report file not found: '$report')" >&2
  exit 2
fi
if [[ ! -x "$chromium" ]]; then
  echo "chromium not found at $chromium: apt-get install -y chromium, or set CHROMIUM" >&2
  exit 2
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
rm -f "$out"
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --no-first-run --disable-extensions \
  --window-size="${size/x/,}" --screenshot="$out" "$url" >/dev/null 2>&1 || true
if [[ ! -s "$out" ]]; then
  echo "chromium did not write $out" >&2
  exit 1
fi
echo "$out"
