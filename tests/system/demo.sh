#!/usr/bin/env bash
# The main job, as a newcomer first sees it (after setup-host.sh; as root, or a user
# with sudo):
#
#   tests/system/demo.sh [--binary PATH]
#
# As the test user, on the image setup-host.sh built: enables a client `demo` with the
# shell agent in the default allowlist network, starts it, runs one command inside, shows
# the proxy refusing a host the policy does not allow (it decides on the name: nothing
# leaves this machine), prints `list` and `doctor`, and the line that attaches to it.
# Without --binary it builds sandboxctl (release) and runs that. The client stays, to be
# attached to; `sandboxctl disable demo --purge` (as the test user) removes it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

binary=
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        *) die "unknown argument '$1' (usage: $0 [--binary PATH])" ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (the demo runs as the test user), or install sudo"
    # The caller's PATH keeps their cargo.
    exec sudo -- env PATH="$PATH" "$0" "$@"
fi
load_env

if [[ -z $binary ]]; then
    # cargo runs as whoever ran this through sudo, so target/ stays theirs.
    build=(cargo build --release --quiet --manifest-path "$root/Cargo.toml")
    if [[ -n ${SUDO_UID:-} && ${SUDO_UID:-0} -ne 0 ]]; then
        build=(setpriv --reuid="$SUDO_UID" --regid="${SUDO_GID:?}" --init-groups
            env HOME="$(getent passwd "$SUDO_UID" | cut -d: -f6)" PATH="$PATH" "${build[@]}")
    fi
    step "cargo build --release" "${build[@]}"
    binary=$root/target/release/sandboxctl
fi
[[ -x $binary ]] || die "$binary is not an executable sandboxctl"
# A copy the test user can run wherever the checkout lives.
demo_dir=/var/tmp/sandboxctl-demo
install -d -m 0755 "$demo_dir"
install -m 0755 "$binary" "$demo_dir/sandboxctl"
sbx=$demo_dir/sandboxctl

as_test_user() { "$here/as-user.sh" "$@"; }
say() { printf '\n$ %s\n' "$*"; }

project=$TEST_HOME/demo-project
as_test_user sh -c "mkdir -p '$project' && printf 'hello from the project\n' > '$project/README'"

say "sandboxctl enable demo $project --agent shell"
as_test_user "$sbx" enable demo "$project" --agent shell --image "$SANDBOXCTL_TEST_IMAGE"
say "sandboxctl start demo"
as_test_user "$sbx" start demo
say "sandboxctl exec demo -- sh -c 'id -un; cat README; ls /home'"
as_test_user "$sbx" exec demo -- sh -c 'id -un; cat README; ls /home'

# A host the client's policy does not name: the proxy answers 403 before any lookup.
say "sandboxctl exec demo -- curl -sS https://example.com/"
if out=$(as_test_user "$sbx" exec demo -- curl -sS --max-time 20 https://example.com/ 2>&1); then
    die "the proxy let https://example.com/ through: $out"
fi
printf '%s\n' "$out"
grep -q 403 <<<"$out" || die "no refusal (403) from the proxy: $out"
say "sandboxctl logs demo --network --lines 1"
as_test_user "$sbx" logs demo --network --lines 1

say "sandboxctl list"
as_test_user "$sbx" list
say "sandboxctl doctor"
# Its exit status says whether every check passed; the demo shows it either way.
as_test_user "$sbx" doctor || true

printf '\nAttach to the demo sandbox (Ctrl-b d detaches; the sandbox keeps running):\n'
printf '  %s %s attach demo\n' "$here/as-user.sh" "$sbx"
printf 'Remove it:\n  %s %s disable demo --purge\n' "$here/as-user.sh" "$sbx"
