#!/usr/bin/env bash
# Issue 16: what the proxy-held key path costs on loopback. Latency added per request
# (plain HTTP to the proxy, which adds the key and opens TLS, vs TLS straight to a local
# stand-in for the provider) and streaming throughput as a ratio. Builds in release mode.
#
#   tests/bench/keyproxy.sh [--check]   # --check: exit 1 if a target is missed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo run --quiet --release --example keyproxy-bench -- "$@"
