#!/usr/bin/env bash
# Builds the agent image FROM a base that already has node and npm in /usr/local/bin
# (as official Node images and many company bases do) and checks that the build works
# and that the image's node, npm and agents are ours (Node 22 from /opt/node).
#
#   SANDBOXCTL_BIN=PATH tests/system/image-node-base.sh
#
# Run as root, in root's store, where tests/system/build-test-image.sh left the offline
# base localhost/debian:bookworm. The base with Node is made offline: that base plus stub
# node/npm scripts. Only the final stage depends on it: the fetch stages (Node, Claude
# Code, Codex) run in localhost/debian:bookworm (FETCH_BASE_IMAGE) with the host's extra
# CAs named as build-test-image.sh names them, so they come from the layer cache its
# build left. Both images made here get new tags and are removed at the end; the shared
# localhost/debian:bookworm and localhost/agent-sandbox:latest are never touched. The
# image's last layer is the sandboxctl at $SANDBOXCTL_BIN (debug sections stripped).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEBIAN=localhost/debian:bookworm
BASE=localhost/sbx-check-node-base:$$
TAG=localhost/sbx-check-agent-on-node-base:$$
EXTRA_CA_DIR=/usr/local/share/ca-certificates

[[ $(id -u) -eq 0 ]] || { echo "image-node-base: run as root" >&2; exit 1; }
[[ -x ${SANDBOXCTL_BIN:-} ]] ||
    { echo "image-node-base: set SANDBOXCTL_BIN to the sandboxctl binary the image carries" >&2; exit 1; }
podman image exists "$DEBIAN" ||
    { echo "image-node-base: $DEBIAN is missing: run tests/system/build-test-image.sh" >&2; exit 1; }

work=$(mktemp -d /var/tmp/sbx-node-base.XXXXXX)
cleanup() {
    podman rmi -f "$TAG" "$BASE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The base: a node that claims to be an old version and an npm that fails, where an
# official Node image keeps its own.
mkdir "$work/base"
cat >"$work/base/node" <<'EOF'
#!/bin/sh
[ "${1:-}" = --version ] && { echo v18.0.0-base; exit 0; }
echo "the base's node was run: $*" >&2
exit 1
EOF
cat >"$work/base/npm" <<'EOF'
#!/bin/sh
echo "the base's npm was run: $*" >&2
exit 1
EOF
chmod 0755 "$work/base/node" "$work/base/npm"
printf 'FROM %s\nCOPY node npm /usr/local/bin/\n' "$DEBIAN" >"$work/base/Containerfile"
podman build -q -t "$BASE" "$work/base" >/dev/null

# The agent image on it, from a copy of image/ with the host's CAs.
cp -a "$ROOT/image" "$work/ctx"
strip --strip-debug -o "$work/ctx/sandboxctl" "$SANDBOXCTL_BIN"
for crt in "$EXTRA_CA_DIR"/*.crt; do
    [[ -e $crt ]] && cp "$crt" "$work/ctx/certs/"
done
start=$(date +%s)
podman build --layers --build-arg "BASE_IMAGE=$BASE" --build-arg "FETCH_BASE_IMAGE=$DEBIAN" \
    -t "$TAG" "$work/ctx"
echo "image-node-base: built $TAG on $BASE in $(($(date +%s) - start)) s"

# What the agents get: our Node 22 and npm, also at /usr/local/bin, and both agents run.
out=$(podman run --rm --network=none --cap-drop=all --read-only "$TAG" sh -c '
    set -e
    echo "node $(node --version)"
    echo "npm $(npm --version)"
    echo "link $(readlink -f /usr/local/bin/node)"
    claude --version >/dev/null
    codex --version >/dev/null
    echo agents ok')
printf '%s\n' "$out"
grep -q '^node v22\.' <<<"$out" || { echo "image-node-base: node is not our Node 22" >&2; exit 1; }
grep -q '^npm 10\.' <<<"$out" || { echo "image-node-base: npm is not ours" >&2; exit 1; }
grep -q '^link /opt/node/' <<<"$out" ||
    { echo "image-node-base: /usr/local/bin/node is not ours" >&2; exit 1; }
grep -q '^agents ok$' <<<"$out" || { echo "image-node-base: an agent does not run" >&2; exit 1; }
echo "image-node-base: PASS"
