#!/usr/bin/env bash
# Runs the property tests of tests/fuzz.rs with a large case count per target and
# prints each target's totals (cases, seed). A failure prints its seed; replay it with
# FUZZ_SEED=SEED FUZZ_CASES=N cargo test --test fuzz TARGET.
#
#   tests/fuzz.sh            # the long run whose totals are in the README
#   tests/fuzz.sh 2000       # a short budget (`cargo test`, hence run-all.sh, runs the default counts)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scale=${1:-100000}

# The proxy target does a real connection per case: a tenth of the others' count.
failed=0
for spec in "fuzz_render:$scale" "fuzz_policy:$scale" "fuzz_proxy:$((scale / 10))"; do
    target=${spec%%:*} cases=${spec#*:}
    out=$(FUZZ_CASES=$cases cargo test --test fuzz "$target" -- --nocapture --test-threads=1 2>&1) || failed=1
    grep -E '^(fuzz_|test |thread|case)' <<<"$out" || true
done
exit "$failed"
