#!/usr/bin/env bash
# Item 7 of "The boundary holds": 1,000 idle tunnels against the proxy's connection cap
# (default 256), then tunnels past a descriptor limit below what they need. Prints the
# proxy's RSS and descriptors before/with/after, how many were refused, and how many
# log lines it all took. Loopback only; builds in release mode.
#
#   tests/bench/proxy-idle.sh [N]   # N idle tunnels, default 1000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo run --quiet --release --example proxy-bench -- --idle-tunnels "${1:-1000}"
