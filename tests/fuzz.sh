#!/usr/bin/env bash
# Runs the property tests of tests/fuzz.rs (release build) for a long budget and prints
# each target's totals (cases, seed). A failure prints its seed; replay it with
# FUZZ_SEED=SEED FUZZ_CASES=N cargo test --release --test fuzz TARGET.
#
#   tests/fuzz.sh                # the long run whose totals are in docs/testing.md (18 million)
#   tests/fuzz.sh 2000           # SCALE cases for render and proxy, 8 × SCALE for policy and tls
#   tests/fuzz.sh --seconds 60   # a time budget per target
#   tests/fuzz.sh --dev --seconds 40
#                                # the same in the test profile `cargo test` has built
#                                # already (`.ci/run` runs this: no release build of the
#                                # test dependencies, about five minutes on the CI machine)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=(--release)
if [[ ${1:-} == --dev ]]; then
    profile=()
    shift
fi
budget=()
if [[ ${1:-} == --seconds ]]; then
    [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "usage: $0 [--dev] [SCALE | --seconds N]" >&2; exit 2; }
    budget=(FUZZ_SECONDS="$2")
    specs=(fuzz_render: fuzz_policy: fuzz_proxy: fuzz_tls:)
else
    scale=${1:-1000000}
    [[ $scale =~ ^[0-9]+$ ]] || { echo "usage: $0 [--dev] [SCALE | --seconds N]" >&2; exit 2; }
    # The policy and tls targets are the cheapest per case (no unit rendered, no
    # connection).
    specs=("fuzz_render:$scale" "fuzz_policy:$((scale * 8))" "fuzz_proxy:$scale" "fuzz_tls:$((scale * 8))")
fi

cargo test "${profile[@]}" --test fuzz --no-run
failed=0
for spec in "${specs[@]}"; do
    target=${spec%%:*} cases=${spec#*:}
    start=$SECONDS
    out=$(env "${budget[@]}" ${cases:+FUZZ_CASES=$cases} \
        cargo test "${profile[@]}" --test fuzz "$target" -- --nocapture --test-threads=1 2>&1) || failed=1
    # Totals, seed and failures, not the progress lines ("N cases in T s").
    grep -E '^(fuzz_|test |thread|case)' <<<"$out" | grep -vE '^fuzz_proxy: [0-9]+ cases in ' || true
    echo "$target: $((SECONDS - start)) s"
done
exit "$failed"
