#!/usr/bin/env bash
# The README's picture of the optimize report: run `make demo` first, then this (headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-out/optimize/cnn-gru-fashion-mnist/report.html}
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1700 \
  --screenshot=docs/optimize-report.png "file://$PWD/$report" 2>/dev/null
echo "docs/optimize-report.png <- $report"
