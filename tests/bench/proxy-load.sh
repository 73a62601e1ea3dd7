#!/usr/bin/env bash
# Load on the egress proxy (issue 14, part 4): the real `sandboxctl proxy` (release
# build, on a Unix socket, with the units' LimitNOFILE=4096 and default cap of 256)
# takes 1,000 connections at once, twice, and 20,000 one after another, twice; prints
# its descriptors and RSS before, at the peak and after each phase, and whether they
# came back. Loopback only. Exits 1 if a connection hung or failed, or if descriptors or
# memory did not come back (see examples/proxy-load.rs for the tolerances).
#
#   tests/bench/proxy-load.sh [--concurrent N] [--sequential N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --quiet --release --bin sandboxctl --example proxy-load
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/examples/proxy-load" --proxy "$target/release/sandboxctl" "$@"
