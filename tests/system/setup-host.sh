#!/usr/bin/env bash
# Prepare this host for sandboxctl's system tests (run as root; idempotent).
#
# What it does, following ../../shared/research/test-environment.md as measured on the
# project's Debian 12 machines (PID 1 is not systemd, hybrid cgroup v1):
#   - installs rootless Podman and the tools the tests drive (apt);
#   - applies the host fixes rootless Podman needs here, each only if missing;
#   - extracts the Quadlet generator from Debian 13's podman package into
#     /opt/sandboxctl-test (never installs Debian 13 packages system-wide) and links it
#     as the user generator;
#   - creates the unprivileged test user and starts its systemd user manager in a
#     delegated cgroup (never a manager for root);
#   - builds the test image and loads it into the test user's store;
#   - writes /run/sandboxctl-test/env for tests/run-all.sh.
# Undo the running parts with tests/system/teardown-host.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root, or install sudo"
    exec sudo -- "$0" "$@"
fi
[[ $SBX_TEST_USER != root ]] || die "the test user must not be root"

export DEBIAN_FRONTEND=noninteractive
# systemd-container (systemd-nspawn) and debootstrap: the booted Debian 13 lane (tests/boot).
# dpkg-dev and lintian build and check the Debian package (packaging/build-deb.sh); man-db,
# zsh and fish run the man page and completion tests (tests/cli.rs). binutils: `strip`
# for the sandboxctl the test image carries; the dnsname CNI plugin: names on user-defined
# networks, by which the played export's agent pod finds its proxy (tests/system/kube.rs).
packages=(podman crun uidmap slirp4netns fuse-overlayfs passt catatonit debootstrap socat
    dbus dbus-user-session systemd tmux jq iproute2 curl procps util-linux bsdutils
    systemd-container git shellcheck
    lintian dpkg-dev man-db zsh fish
    binutils golang-github-containernetworking-plugin-dnsname)
trixie_dir=$SBX_OPT_DIR/podman-trixie
quadlet=$trixie_dir/usr/libexec/podman/quadlet
generator_link=/usr/local/lib/systemd/user-generators/podman-user-generator

# --- apt -----------------------------------------------------------------------------

add_trixie_suite() {
    local list=/etc/apt/sources.list.d/sandboxctl-test-trixie.sources
    local pref=/etc/apt/preferences.d/sandboxctl-test-trixie
    local mirror
    mirror=$(debian_mirror)
    local want_list="Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    # Only used to fetch one package for extraction; the low pin keeps apt from ever
    # choosing a trixie package for this bookworm system.
    local want_pref="Package: *
Pin: release n=trixie
Pin-Priority: 100"
    local changed=1
    if [[ ! -f $list || $(cat "$list") != "$want_list" ]]; then
        printf '%s\n' "$want_list" >"$list"
        changed=0
    fi
    if [[ ! -f $pref || $(cat "$pref") != "$want_pref" ]]; then
        printf '%s\n' "$want_pref" >"$pref"
        changed=0
    fi
    return $changed
}

missing_packages() {
    local p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

need_update=false
if add_trixie_suite; then
    log "added the trixie suite (pin 100) from the existing mirror"
    need_update=true
fi
mapfile -t missing < <(missing_packages)
if [[ ${#missing[@]} -gt 0 || ! -x $quadlet ]]; then
    need_update=true
fi
# (Captured first: grep -q closing the pipe early would fail the pipeline.)
podman_policy=$(apt-cache policy podman 2>/dev/null || true)
if [[ $podman_policy != *trixie* ]]; then
    need_update=true
fi
if $need_update; then
    step "apt-get update" apt-get update -qq
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    step "apt-get install ${missing[*]}" \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages already installed"
fi

# openssh-server: the git-over-SSH system test runs its own sshd, as the test user, on a
# loopback port. The system's sshd must never run: sshd_not_to_be_run stops its unit and
# init script, a policy-rc.d keeps the install from starting anything, and the units
# the package enables are disabled again.
install_sshd() {
    local policy=/usr/sbin/policy-rc.d ours=false
    install -d -m 0755 /etc/ssh
    touch /etc/ssh/sshd_not_to_be_run
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        ours=true
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends openssh-server >/dev/null || status=$?
    if $ours; then rm -f "$policy"; fi
    systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
    return "$status"
}
if ! dpkg-query -W -f='${Status}\n' openssh-server 2>/dev/null | grep -q '^install ok installed$'; then
    $need_update || step "apt-get update" apt-get update -qq
    step "apt-get install openssh-server (never started as a system service)" install_sshd
fi

# kubectl: `kubectl apply --dry-run=client` of the export (tests/kube/kubectl-dry-run.sh).
# Any kubectl will do; where there is none, Debian 13's (a static Go program; the trixie
# suite above is pinned low, so it is asked for by name).
if ! command -v kubectl >/dev/null; then
    $need_update || step "apt-get update" apt-get update -qq
    step "apt-get install kubectl/trixie" \
        apt-get install -y -qq --no-install-recommends kubectl/trixie >/dev/null
    command -v kubectl >/dev/null || die "kubectl is still missing after installing Debian 13's package"
fi

# --- Quadlet generator from Debian 13's podman package --------------------------------

install_quadlet() {
    local tmp
    tmp=$(mktemp -d)
    chown _apt "$tmp" 2>/dev/null || chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -qq podman/trixie) >/dev/null ||
        die "cannot download podman from trixie (is the trixie suite reachable?)"
    rm -rf "$trixie_dir.new"
    mkdir -p "$trixie_dir.new"
    dpkg -x "$tmp"/podman_*.deb "$trixie_dir.new"
    rm -rf "$tmp" "$trixie_dir"
    mv "$trixie_dir.new" "$trixie_dir"
    [[ -x $quadlet ]] || die "the trixie podman package has no $quadlet"
}
if [[ ! -x $quadlet ]]; then
    step "extracted the Quadlet generator from Debian 13's podman into $trixie_dir" install_quadlet
else
    log "Quadlet generator already at $quadlet"
fi
"$quadlet" -version >/dev/null 2>&1 || "$quadlet" --help >/dev/null 2>&1 ||
    QUADLET_UNIT_DIRS=/nonexistent "$quadlet" -dryrun -user >/dev/null 2>&1 ||
    die "$quadlet does not run on this host"
mkdir -p "${generator_link%/*}"
linked_now=false
if [[ $(readlink "$generator_link" 2>/dev/null) != "$quadlet" ]]; then
    ln -sfn "$quadlet" "$generator_link"
    linked_now=true
    log "linked $generator_link -> $quadlet"
fi

# --- host fixes for rootless Podman on this kind of machine ---------------------------

# shellcheck source-path=SCRIPTDIR source=lib/host-fixes.sh
. "$here/lib/host-fixes.sh"
apply_host_fixes

# --- the test user --------------------------------------------------------------------

if ! id "$SBX_TEST_USER" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$SBX_TEST_USER"
    log "created user $SBX_TEST_USER"
fi
test_uid=$(id -u "$SBX_TEST_USER")
test_gid=$(id -g "$SBX_TEST_USER")
test_home=$(getent passwd "$SBX_TEST_USER" | cut -d: -f6)
[[ $test_uid -ne 0 ]] || die "$SBX_TEST_USER has uid 0"
for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$SBX_TEST_USER:" "$f" 2>/dev/null; then
        # Pick a range above every existing one.
        start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$f" 2>/dev/null || echo 100000)
        echo "$SBX_TEST_USER:$start:65536" >>"$f"
        log "added $SBX_TEST_USER:$start:65536 to $f"
    fi
done

storage_conf=$test_home/.config/containers/storage.conf
if ! grep -qs '^driver *= *"overlay"' "$storage_conf"; then
    install -d -o "$SBX_TEST_USER" -g "$test_gid" -m 0755 "$test_home/.config" "$test_home/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' >"$storage_conf"
    chown "$SBX_TEST_USER:$test_gid" "$storage_conf"
    log "wrote $storage_conf (overlay)"
fi

runtime_dir=/run/user/$test_uid
install -d -m 0755 /run/user
install -d -o "$SBX_TEST_USER" -g "$test_gid" -m 0700 "$runtime_dir"
install -d -m 0755 "$SBX_STATE_DIR"
# A small file system the test user owns, for the full-disk tests (the user cannot
# mount one).
install -d -m 0755 "$SBX_SMALL_FS"
if ! mountpoint -q "$SBX_SMALL_FS"; then
    mount -t tmpfs -o "size=1m,mode=0700,uid=$test_uid,gid=$test_gid" sbx-small "$SBX_SMALL_FS"
fi

# --- the test user's systemd user manager ---------------------------------------------

pid_file=$SBX_STATE_DIR/user-manager.pid
manager_log=$SBX_STATE_DIR/user-manager.log

manager_pid_alive() {
    local pid
    [[ -r $pid_file ]] || return 1
    pid=$(cat "$pid_file")
    [[ -d /proc/$pid ]] || return 1
    [[ $(stat -c %u "/proc/$pid") == "$test_uid" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'systemd --user'
}

start_user_manager() {
    local cg=/sys/fs/cgroup/unified/user.slice/user-$test_uid.slice/user@$test_uid.service
    mkdir -p /run/systemd/system
    mkdir -p "$cg"
    chown -R "$SBX_TEST_USER:$test_gid" "$cg"
    rm -f "$runtime_dir/systemd/private" "$runtime_dir/bus"
    : >"$manager_log"
    chmod 0644 "$manager_log"
    rm -f "$pid_file"
    # The launcher moves itself into the delegated cgroup, records its PID (which the
    # manager keeps: everything after it is exec), then becomes the user's manager.
    # shellcheck disable=SC2016 # expanded by the launcher shell
    setsid bash -c '
        echo $$ >"$1/cgroup.procs"
        echo $$ >"$2"
        exec setpriv --reuid="$3" --regid="$4" --init-groups \
            env -i HOME="$5" USER="$6" LOGNAME="$6" XDG_RUNTIME_DIR="$7" \
            DBUS_SESSION_BUS_ADDRESS="unix:path=$7/bus" \
            PATH=/usr/local/bin:/usr/bin:/bin \
            /lib/systemd/systemd --user
    ' launcher "$cg" "$pid_file" "$test_uid" "$test_gid" "$test_home" "$SBX_TEST_USER" "$runtime_dir" \
        </dev/null >>"$manager_log" 2>&1 &
    local deadline=$((SECONDS + 30)) state
    while :; do
        state=$(user_manager_state "$test_uid" "$SBX_TEST_USER" "$test_home")
        [[ $state == running || $state == degraded ]] && break
        if ((SECONDS >= deadline)); then
            rmdir /run/systemd/system 2>/dev/null || true
            tail -n 20 "$manager_log" >&2 || true
            die "the user manager of $SBX_TEST_USER did not reach 'running' within 30 s (state: $state; log: $manager_log)"
        fi
        sleep 0.1
    done
    # Only the manager's start needed it; apt's scripts must not think systemd runs.
    rmdir /run/systemd/system 2>/dev/null || rm -rf /run/systemd/system
    [[ $state == running ]] || log "warning: the user manager is $state"
}

started_now=false
state=$(user_manager_state "$test_uid" "$SBX_TEST_USER" "$test_home")
if manager_pid_alive && [[ $state == running || $state == degraded ]]; then
    log "user manager of $SBX_TEST_USER already running (pid $(cat "$pid_file"), $state)"
elif [[ $state == running || $state == degraded ]]; then
    die "a user manager answers for $SBX_TEST_USER but it is not the one recorded in $pid_file; stop it with 'systemctl --user exit' as $SBX_TEST_USER"
else
    step "started the systemd user manager of $SBX_TEST_USER" start_user_manager
    started_now=true
    log "user manager pid $(cat "$pid_file"), console log $manager_log"
fi

# A manager that was already running picks up a new generator link on its next reload.
if $linked_now && ! $started_now; then
    setpriv --reuid="$test_uid" --regid="$test_gid" --init-groups \
        env -i HOME="$test_home" USER="$SBX_TEST_USER" PATH=/usr/bin:/bin \
        XDG_RUNTIME_DIR="$runtime_dir" DBUS_SESSION_BUS_ADDRESS="unix:path=$runtime_dir/bus" \
        systemctl --user daemon-reload
    log "reloaded the user manager"
fi

image=localhost/agent-sandbox:latest

# --- the environment file -------------------------------------------------------------

cat >"$SBX_ENV_FILE.new" <<ENV
TEST_USER=$SBX_TEST_USER
TEST_UID=$test_uid
TEST_HOME=$test_home
TEST_RUNTIME_DIR=$runtime_dir
TEST_BUS_ADDRESS=unix:path=$runtime_dir/bus
SANDBOXCTL_QUADLET=$quadlet
SANDBOXCTL_TEST_IMAGE=$image
SANDBOXCTL_TEST_SMALL_FS=$SBX_SMALL_FS
USER_MANAGER_PID=$(cat "$pid_file")
ENV
chmod 0644 "$SBX_ENV_FILE.new"
mv "$SBX_ENV_FILE.new" "$SBX_ENV_FILE"
log "wrote $SBX_ENV_FILE"

# --- the image ------------------------------------------------------------------------

step "built/loaded $image for $SBX_TEST_USER" "$here/build-test-image.sh" --load-into "$SBX_TEST_USER"

log "done"
