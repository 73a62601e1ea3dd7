#!/usr/bin/env bash
# P6 of issue 5: tunnel throughput vs a direct loopback transfer, time to first byte
# added per connection (both as ratios from one run), and the proxy's RSS idle and
# with 100 open tunnels. Loopback only; builds in release mode.
#
#   tests/bench/proxy-throughput.sh [--check]   # --check: exit 1 if a target is missed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo run --quiet --release --example proxy-bench -- "$@"
