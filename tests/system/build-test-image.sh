#!/bin/sh
# Builds the agent image for tests and CI, which cannot pull from a container registry.
#
#   tests/system/build-test-image.sh [--binary PATH] [--load-into USER] [--force]
#
# Run as root. Idempotent:
#  (a) makes the offline base localhost/debian:bookworm with debootstrap + podman import
#      when root's store lacks it (the Debian mirror comes from the host's apt sources);
#  (b) builds localhost/agent-sandbox:latest FROM it, with the host's extra CA
#      certificates and the sandboxctl binary (its last layer, as `sandboxctl image build`
#      adds the running one) in a temporary copy of image/ (never committed). The binary
#      is PATH of --binary (default $SANDBOXCTL_BIN; else `cargo build --bin sandboxctl`
#      in this checkout, as the user who ran sudo), with its debug sections stripped
#      (a debug build is ~140 MB, ~35 MB without them). The build is skipped when an
#      image labelled with the hash of image/, the CAs, the binary, the base and the
#      build arguments already exists;
#  (c) --load-into USER copies the image into that rootless user's store (skipped when
#      the user already has the same image; the copy it replaces is removed if unused).
# --force rebuilds even when the label matches; BUILD_ARGS="NAME=VALUE …" adds build
# arguments (e.g. CLAUDE_CODE_VERSION=…) and is part of the hash.
# Prints how long each step took.
set -eu

BASE=localhost/debian:bookworm
IMAGE=${IMAGE:-localhost/agent-sandbox:latest}
HASH_LABEL=io.sandboxctl.image.inputs
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONTEXT_SRC=$ROOT/image
EXTRA_CA_DIR=/usr/local/share/ca-certificates

LOAD_USER=
FORCE=
BINARY=${SANDBOXCTL_BIN:-}
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
        --load-into) LOAD_USER=${2:?--load-into needs a user name}; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-test-image: unknown argument: $1" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "build-test-image: run as root" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
log() { echo "build-test-image: $*"; }

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/host-fixes.sh
. "$here/lib/host-fixes.sh"


debian_mirror() {
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null
}

make_base() {
    if podman image exists "$BASE"; then
        log "$BASE present"
        return
    fi
    command -v debootstrap >/dev/null || { apt-get install -y --no-install-recommends debootstrap; }
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { echo "build-test-image: no URIs: line in /etc/apt/sources.list.d/debian.sources" >&2; exit 1; }
    t=$(now)
    dir=$(mktemp -d /var/tmp/debian-bookworm.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 ||
        { tail -20 "$dir.log" >&2; exit 1; }
    rm -f "$dir.log"
    # What a registry's debian:bookworm-slim also leaves out: downloaded .debs and lists.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
    tar -C "$dir" -c . | podman import -q - "$BASE" >/dev/null
    rm -rf "$dir"
    trap - EXIT
    log "base $BASE built in $(elapsed "$t")"
}

# The sandboxctl the image carries, without debug sections, as $work/sandboxctl.
prepare_binary() {
    if [ -z "$BINARY" ]; then
        log "no --binary: cargo build --bin sandboxctl in $ROOT"
        if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID:-0}" != 0 ]; then
            # sudo's PATH lacks the invoker's cargo: add where rustup puts it.
            invoker_home=$(getent passwd "$SUDO_UID" | cut -d: -f6)
            BINARY=$(cd "$ROOT" && setpriv --reuid="$SUDO_UID" --regid="${SUDO_GID:?}" --init-groups \
                env HOME="$invoker_home" PATH="$PATH:$invoker_home/.cargo/bin" \
                cargo build --bin sandboxctl --message-format=json) ||
                { echo "build-test-image: cannot build sandboxctl as uid $SUDO_UID: pass --binary PATH" >&2; exit 1; }
        else
            command -v cargo >/dev/null ||
                { echo "build-test-image: no sandboxctl binary: pass --binary PATH (or put cargo on PATH)" >&2; exit 1; }
            BINARY=$(cd "$ROOT" && cargo build --bin sandboxctl --message-format=json) || exit 1
        fi
        BINARY=$(printf '%s\n' "$BINARY" | jq -r 'select(.reason == "compiler-artifact" and .target.name == "sandboxctl" and .executable != null) | .executable' | tail -n 1)
    fi
    [ -x "$BINARY" ] || { echo "build-test-image: $BINARY is not an executable sandboxctl" >&2; exit 1; }
    strip --strip-debug -o "$work/sandboxctl" "$BINARY"
    chmod 0755 "$work/sandboxctl"
}

# Everything the image depends on, hashed: the context files and their modes (COPY keeps
# them: a script that loses its x bit must rebuild), the binary, the CAs added, the base
# image's id and the build arguments.
inputs_hash() {
    {
        (cd "$CONTEXT_SRC" && find . -type f ! -path './certs/*' ! -path ./sandboxctl -print | LC_ALL=C sort | xargs sha256sum)
        (cd "$CONTEXT_SRC" && find . -type f ! -path './certs/*' ! -path ./sandboxctl -printf '%m %p\n' | LC_ALL=C sort)
        sha256sum <"$work/sandboxctl"
        cat "$EXTRA_CA_DIR"/*.crt 2>/dev/null || true
        podman image inspect --format '{{.Id}}' "$BASE"
        echo "BUILD_ARGS=${BUILD_ARGS:-}"
    } | sha256sum | cut -d' ' -f1
}

build_image() {
    hash=$(inputs_hash)
    have=$(podman image inspect --format "{{ index .Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)
    if [ -z "$FORCE" ] && [ "$have" = "$hash" ]; then
        log "$IMAGE is up to date (inputs $hash)"
        return
    fi
    t=$(now)
    ctx=$work/context
    cp -a "$CONTEXT_SRC"/. "$ctx"/
    cp -p "$work/sandboxctl" "$ctx/sandboxctl"
    mkdir -p "$ctx/certs"
    for crt in "$EXTRA_CA_DIR"/*.crt; do
        [ -e "$crt" ] && cp "$crt" "$ctx/certs/"
    done
    set -- --build-arg "BASE_IMAGE=$BASE" --label "$HASH_LABEL=$hash" -t "$IMAGE"
    for arg in ${BUILD_ARGS:-}; do set -- "$@" --build-arg "$arg"; done
    log "podman build $*"
    podman build --layers "$@" "$ctx"
    log "image $IMAGE built in $(elapsed "$t")"
    podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
}

load_into() {
    user=$1
    uid=$(id -u "$user") || { echo "build-test-image: no such user: $user" >&2; exit 1; }
    home=$(getent passwd "$user" | cut -d: -f6)
    run_dir=/run/user/$uid
    if [ ! -d "$run_dir" ]; then
        mkdir -p "$run_dir"
        chown "$user:" "$run_dir"
        chmod 0700 "$run_dir"
    fi
    as_user() {
        (cd / && setpriv --reuid "$uid" --regid "$(id -g "$user")" --init-groups \
            env -i HOME="$home" USER="$user" LOGNAME="$user" XDG_RUNTIME_DIR="$run_dir" \
            PATH=/usr/local/bin:/usr/bin:/bin "$@")
    }
    id_root=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    id_user=$(as_user podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null) || id_user=
    if [ "$id_root" = "$id_user" ]; then
        log "$user already has $IMAGE"
        return
    fi
    t=$(now)
    podman save "$IMAGE" | as_user podman load -q
    log "loaded $IMAGE into $user's store in $(elapsed "$t")"
    # The copy it replaces is untagged now; drop it unless a container still uses it.
    if [ -n "$id_user" ]; then
        as_user podman rmi "$id_user" >/dev/null 2>&1 || true
    fi
}

total=$(now)
apply_host_fixes
make_base
work=$(mktemp -d /var/tmp/agent-image.XXXXXX)
mkdir "$work/context"
trap 'rm -rf "$work"' EXIT
prepare_binary
build_image
[ -z "$LOAD_USER" ] || load_into "$LOAD_USER"
log "done in $(elapsed "$total")"
