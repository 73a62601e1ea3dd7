#!/usr/bin/env bash
# Validates what `sandboxctl export --to kube` writes with real consumers: every core
# object against the OpenAPI schemas of a pinned Kubernetes version (the
# `kubernetes-validate` package, which carries them offline; strict: unknown fields
# fail), and every `Sandbox` against the `v1beta1` openAPIV3Schema of the agent-sandbox
# CRD in ../shared/research/k8s/ (strict too: a field the API server would prune fails). It checks the export snapshots (tests/snapshots/
# suite__kube__*.snap: both flavors, each agent × network mode), which the `kube` tests
# prove are exactly what the renderer writes, plus any files given as arguments.
#
#   tests/kube/validate.sh [FILE.yaml…]
#
# The validators live in a virtualenv ($KUBE_VENV, default
# /var/cache/sandboxctl-kube-venv), created with pip on first use.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${KUBE_VENV:-/var/cache/sandboxctl-kube-venv}
k8s_version=${KUBE_VERSION:-1.33.0}
crd=${SANDBOX_CRD:-$root/../shared/research/k8s/agents.x-k8s.io_sandboxes.yaml}
[[ -r $crd ]] || crd=/work/shared/research/k8s/agents.x-k8s.io_sandboxes.yaml

die() { echo "validate.sh: $*" >&2; exit 1; }
[[ -r $crd ]] || die "the Sandbox CRD is missing: put agents.x-k8s.io_sandboxes.yaml at $crd (or set SANDBOX_CRD)"

if ! "$venv/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    python3 -m venv "$venv" || die "cannot create the virtualenv $venv (install python3-venv)"
    "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0' 'jsonschema>=4' 'pyyaml>=6' ||
        die "cannot install kubernetes-validate into $venv"
fi

files=("$root"/tests/snapshots/suite__kube__*.snap "$@")
[[ -e ${files[0]} ]] || die "no export snapshots under tests/snapshots"

"$venv/bin/python" - "$k8s_version" "$crd" "${files[@]}" <<'PY'
import sys

import jsonschema
import kubernetes_validate
import yaml

version, crd_path, files = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]


def strict(s):
    """The API server prunes fields a structural schema does not name: a field lost
    silently. Refuse them instead, except where the schema keeps unknown fields."""
    if isinstance(s, dict):
        s = {k: strict(v) for k, v in s.items()}
        if "properties" in s and "additionalProperties" not in s \
                and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    elif isinstance(s, list):
        s = [strict(v) for v in s]
    return s


schema = strict(schema)

failed = 0
checked = {"core": 0, "sandbox": 0}
for path in files:
    with open(path) as f:
        text = f.read()
    if path.endswith(".snap"):
        # insta's header is the first document: drop it.
        text = text.split("---\n", 2)[2]
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        what = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            if doc.get("kind") == "Sandbox":
                if doc.get("apiVersion") != "agents.x-k8s.io/v1beta1":
                    raise ValueError(f"apiVersion {doc.get('apiVersion')}")
                jsonschema.validate(doc, schema)
                checked["sandbox"] += 1
            else:
                kubernetes_validate.validate(doc, version, strict=True)
                checked["core"] += 1
        except Exception as e:  # every validator's error is a failure, with its message
            failed += 1
            print(f"FAIL {what}: {str(e).splitlines()[0]}", file=sys.stderr)
print(f"{checked['core']} core objects valid against Kubernetes {version} (strict), "
      f"{checked['sandbox']} Sandboxes valid against the CRD's v1beta1 schema; {failed} invalid")
sys.exit(1 if failed else 0)
PY
