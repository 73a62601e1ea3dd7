#!/usr/bin/env bash
# `kubectl apply --dry-run=client` of what `sandboxctl export --to kube` writes: every
# export snapshot (tests/snapshots/suite__kube__*.snap: both flavors, each agent × network mode),
# plus any files given as arguments. No cluster is reachable here, and even a client dry
# run needs API discovery, so kubectl talks to apiserver-stub.py (discovery only, every
# object "not found", every write refused). kubectl must accept each export and report
# each of its documents "created (dry run)", with nothing but GETs sent.
#
# What this proves: kubectl's own decoder reads every document; each apiVersion/kind maps
# to a resource of the API (the Sandbox to the agent-sandbox CRD's); namespaced objects
# carry a namespace that agrees with kubectl's. What it does not: schema validation
# (--validate=false: that needs the server's OpenAPI; tests/kube/validate.sh checks the
# schemas), admission (Pod Security), or anything a controller does.
#
#   tests/kube/kubectl-dry-run.sh [FILE.yaml…]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() { echo "kubectl-dry-run.sh: $*" >&2; exit 1; }

command -v kubectl >/dev/null || die "kubectl is not installed (tests/system/setup-host.sh installs it)"
command -v python3 >/dev/null || die "python3 is not installed"

work=$(mktemp -d /tmp/sbx-kubectl.XXXXXX)
stub=
cleanup() {
    [[ -z $stub ]] || kill "$stub" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 "$root/tests/kube/apiserver-stub.py" "$work/port" "$work/requests" &
stub=$!
for _ in $(seq 100); do
    [[ -s $work/port ]] && break
    kill -0 "$stub" 2>/dev/null || die "the stub API server exited"
    sleep 0.1
done
[[ -s $work/port ]] || die "the stub API server did not listen within 10 s"
server=http://127.0.0.1:$(cat "$work/port")

# apply FILE — kubectl's client dry run of FILE against the stub.
apply() {
    KUBECONFIG=/dev/null kubectl apply --dry-run=client --validate=false \
        --server "$server" --cache-dir "$work/cache" -f "$1"
}

files=("$root"/tests/snapshots/suite__kube__*.snap "$@")
[[ -e ${files[0]} ]] || die "no export snapshots under tests/snapshots"

exports=0 objects=0 failed=0
for f in "${files[@]}"; do
    yaml=$work/export.yaml
    if [[ $f == *.snap ]]; then
        # insta's header is the first document: drop it.
        awk 'n >= 2 { print } /^---$/ && n < 2 { n++ }' "$f" >"$yaml"
    else
        cp "$f" "$yaml"
    fi
    want=$(grep -c '^---$' "$yaml" || true)
    if ! out=$(apply "$yaml" 2>&1); then
        echo "FAIL $f: kubectl refused it:" >&2
        printf '%s\n' "$out" >&2
        failed=$((failed + 1))
        continue
    fi
    got=$(grep -c ' created (dry run)$' <<<"$out" || true)
    if [[ $got -ne $want || $want -eq 0 ]]; then
        echo "FAIL $f: $want documents, $got created (dry run):" >&2
        printf '%s\n' "$out" >&2
        failed=$((failed + 1))
        continue
    fi
    exports=$((exports + 1)) objects=$((objects + got))
done

# The check can fail: a kind the API does not have is refused.
printf 'apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n' >"$work/bad.yaml"
if out=$(apply "$work/bad.yaml" 2>&1); then
    echo "FAIL: kubectl accepted a kind the API does not serve:" >&2
    printf '%s\n' "$out" >&2
    failed=$((failed + 1))
fi
if grep -v '^GET ' "$work/requests" >&2; then
    echo "FAIL: a client dry run sent the requests above" >&2
    failed=$((failed + 1))
fi

version=$(KUBECONFIG=/dev/null kubectl version --client 2>/dev/null | sed -n "s/^Client Version: /kubectl /p")
echo "$exports exports, $objects objects created (dry run) by ${version:-kubectl} against the discovery stub; $failed failed"
[[ $failed -eq 0 ]]
