#!/usr/bin/env bash
# Remove everything the test harness left on this host, so that the next
# tests/system/setup-host.sh starts as on a brand-new machine: the test user (its home,
# image store, runtime dir, subordinate ids and delegated cgroup), the harness's state and
# binaries, the images it built in root's store (the offline base and the layer cache
# included), the extracted Quadlet generator and its link, and the booted-lane cache.
# Installed packages and the host fixes stay. Run as root; safe to run when nothing is
# there. .ci/run runs it first, so a step missing from setup-host.sh fails CI instead of
# being hidden by what an earlier run left behind.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

[[ $(id -u) -eq 0 ]] || die "run as root"

"$here/teardown-host.sh"

# The packaged lane (package-lane.sh) removes its package on exit; a run killed
# before that leaves it installed, and its units would change every later test run.
if [[ $(dpkg-query -W -f='${db:Status-Status}' sandboxctl 2>/dev/null || true) == installed ]]; then
    log "removing the sandboxctl package an earlier packaged lane left"
    dpkg -r sandboxctl >/dev/null
fi

if uid=$(id -u "$SBX_TEST_USER" 2>/dev/null); then
    [[ $uid -ne 0 ]] || die "$SBX_TEST_USER has uid 0; refusing to remove it"
    # Whatever of the user still runs (podman's pause process, conmon, containers).
    pkill -KILL -U "$uid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while pgrep -U "$uid" >/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    pgrep -U "$uid" >/dev/null && die "processes of $SBX_TEST_USER are still running"
    # Mounts a container left in the user's home or runtime dir (none when its mount
    # namespace died with the processes; checked so userdel never crosses one).
    home=$(getent passwd "$SBX_TEST_USER" | cut -d: -f6)
    awk -v h="$home/" -v r="/run/user/$uid/" \
        '{ p = $5 "/" } index(p, h) == 1 || index(p, r) == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do umount -l "$m" || true; done
    userdel -r "$SBX_TEST_USER" >/dev/null 2>&1 || userdel "$SBX_TEST_USER"
    rm -rf "$home" "/run/user/$uid"
    for f in /etc/subuid /etc/subgid; do
        [[ -f $f ]] && sed -i "/^$SBX_TEST_USER:/d" "$f"
    done
    rm -f "/var/lib/systemd/linger/$SBX_TEST_USER"
    cg=/sys/fs/cgroup/unified/user.slice/user-$uid.slice
    if [[ -d $cg ]]; then
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    fi
    log "removed the test user $SBX_TEST_USER (uid $uid) and its home, runtime dir and ids"
fi

if mountpoint -q "$SBX_SMALL_FS" 2>/dev/null; then
    umount "$SBX_SMALL_FS"
fi
rm -rf "$SBX_SMALL_FS"
rm -rf "$SBX_STATE_DIR" /var/tmp/sandboxctl-test /var/tmp/sandboxctl-boot "$SBX_OPT_DIR" /var/cache/sandboxctl-test
rm -f /usr/local/lib/systemd/user-generators/podman-user-generator

if command -v podman >/dev/null; then
    mapfile -t images < <(podman images --format '{{.Repository}}:{{.Tag}}' |
        grep -E '^localhost/(agent-sandbox|debian):' || true)
    if [[ ${#images[@]} -gt 0 ]]; then
        podman rmi -f "${images[@]}" >/dev/null
        log "removed ${images[*]} from root's image store"
    fi
    # The intermediate stages of those builds (the layer cache).
    podman image prune -f >/dev/null
fi
log "host reset"
