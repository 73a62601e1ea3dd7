#!/usr/bin/env bash
# Run a command as the system-test user with only that user's environment.
#
#   tests/system/as-user.sh CMD [ARG…]
#
# Reads /run/sandboxctl-test/env (written by setup-host.sh). The child gets HOME, USER,
# LOGNAME, PATH, XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS of the test user, plus the
# SANDBOXCTL_*, AGENT_SANDBOX_* and RUST_BACKTRACE variables of the caller (passed on
# purpose), and nothing else. It starts in the user's home directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

[[ $# -gt 0 ]] || die "usage: $0 CMD [ARG…]"
# Keep what the caller set on purpose before the env file fills in the defaults.
passed=()
while IFS= read -r name; do
    passed+=("$name=${!name}")
done < <(compgen -e | grep -E '^(SANDBOXCTL_|AGENT_SANDBOX_|RUST_BACKTRACE$)' || true)
load_env
for kv in "${passed[@]}"; do
    printf -v "${kv%%=*}" '%s' "${kv#*=}"
done
child_env=(
    HOME="$TEST_HOME" USER="$TEST_USER" LOGNAME="$TEST_USER"
    PATH=/usr/local/bin:/usr/bin:/bin
    XDG_RUNTIME_DIR="$TEST_RUNTIME_DIR" DBUS_SESSION_BUS_ADDRESS="$TEST_BUS_ADDRESS"
)
while IFS= read -r name; do
    child_env+=("$name=${!name}")
done < <(compgen -v | grep -E '^(SANDBOXCTL_|AGENT_SANDBOX_|RUST_BACKTRACE$)' || true)

cd "$TEST_HOME"
if [[ $(id -u) -eq $TEST_UID ]]; then
    exec env -i "${child_env[@]}" "$@"
fi
[[ $(id -u) -eq 0 ]] || die "run as root or as $TEST_USER"
exec setpriv --reuid="$TEST_UID" --regid="$(id -g "$TEST_USER")" --init-groups \
    env -i "${child_env[@]}" "$@"
