#!/usr/bin/env bash
# Stop what tests/system/setup-host.sh started: the test user's systemd user manager
# (with `systemctl --user exit`, which also stops its containers), then wait for the
# recorded PID to go. Never kills anything by name. Packages, the test user, the image
# and the host fixes stay (setup-host.sh is idempotent and reuses them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

[[ $(id -u) -eq 0 ]] || die "run as root"
if [[ ! -r $SBX_ENV_FILE ]]; then
    log "nothing to tear down ($SBX_ENV_FILE is missing)"
    exit 0
fi
load_env
pid=$USER_MANAGER_PID
[[ $pid =~ ^[0-9]+$ ]] || die "bad USER_MANAGER_PID in $SBX_ENV_FILE: $pid"

is_our_manager() {
    [[ -d /proc/$pid && $(stat -c %u "/proc/$pid") == "$TEST_UID" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'systemd --user'
}

if is_our_manager; then
    "$here/as-user.sh" systemctl --user exit || log "systemctl --user exit failed"
    deadline=$((SECONDS + 30))
    while is_our_manager && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if is_our_manager; then
        log "user manager (pid $pid) still running after 30 s; sending SIGTERM to that PID"
        kill -TERM "$pid" 2>/dev/null || true
        sleep 2
    fi
    is_our_manager && die "user manager (pid $pid) did not stop"
    log "stopped the user manager of $TEST_USER (pid $pid)"
else
    log "user manager (pid $pid) is not running"
fi
rm -f "$SBX_ENV_FILE" "$SBX_STATE_DIR/user-manager.pid"
# Left behind on purpose only while the manager was starting; never keep it around.
rmdir /run/systemd/system 2>/dev/null || true
