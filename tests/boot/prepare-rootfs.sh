#!/usr/bin/env bash
# Prepare (once) the Debian 13 root file system the booted lane boots with systemd-nspawn.
#
#   sudo tests/boot/prepare-rootfs.sh     # prints the rootfs path on stdout
#
# The tree is cached under /var/cache/sandboxctl-test/boot/rootfs-<key>, where the key
# hashes the suite, the package list and this script (what it configures). A missing or
# changed key rebuilds it with debootstrap from the mirror the host already uses; older
# trees are removed. Runs boot private copies of it, never the cached tree itself.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../system/lib/common.sh
. "$here/../system/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
command -v debootstrap >/dev/null || die "debootstrap is missing: run 'sudo tests/system/setup-host.sh'"

key=$( { printf '%s\n' "$SBX_BOOT_SUITE" "${SBX_BOOT_PACKAGES[@]}"; cat "${BASH_SOURCE[0]}"; } |
    sha256sum | cut -c1-16)
rootfs=$SBX_BOOT_CACHE/rootfs-$key
if [[ -f $rootfs/.sandboxctl-complete ]]; then
    log "cached rootfs $rootfs"
    printf '%s\n' "$rootfs"
    exit 0
fi

install -d -m 0755 "$SBX_BOOT_CACHE"
tmp=$rootfs.new
rm -rf "$tmp"
mirror=$(debian_mirror)
packages=$(IFS=,; printf '%s' "${SBX_BOOT_PACKAGES[*]}")
step "debootstrap $SBX_BOOT_SUITE (${#SBX_BOOT_PACKAGES[@]} packages and their dependencies)" \
    debootstrap --variant=minbase --include="$packages" "$SBX_BOOT_SUITE" "$tmp" "$mirror" \
    >"$SBX_BOOT_CACHE/debootstrap.log" 2>&1 ||
    { tail -n 30 "$SBX_BOOT_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $SBX_BOOT_CACHE/debootstrap.log)"; }

configure() {
    local r=$1
    echo sbx-booted >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 sbx-booted\n' >"$r/etc/hosts"
    : >"$r/etc/machine-id"
    # Rootless Podman inside nspawn on this kernel (measured): the container may not set
    # namespaced sysctls and cannot create a session keyring.
    mkdir -p "$r/etc/containers"
    printf '[containers]\ndefault_sysctls = []\nkeyring = false\n' >"$r/etc/containers/containers.conf"
    # The network is the host's (no private network); nothing waits for it to come up, so
    # network-online.target is reached at boot as on an ordinary networked machine. The
    # lane stops it on purpose for the "no network" check.
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
    ln -sf /usr/lib/systemd/system/network-online.target \
        "$r/etc/systemd/system/multi-user.target.wants/network-online.target"
    # openssh-server is there for the test's own sshd (as the user, on a loopback port);
    # the system's sshd never runs (the network is the host's).
    touch "$r/etc/ssh/sshd_not_to_be_run"
    ln -sf /dev/null "$r/etc/systemd/system/ssh.service"
    ln -sf /dev/null "$r/etc/systemd/system/ssh.socket"
    # No gettys on a console nobody reads.
    ln -sf /dev/null "$r/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$r/etc/systemd/system/getty@.service"
    chroot "$r" useradd -m -s /bin/bash "$SBX_BOOT_USER"
    local home=/home/$SBX_BOOT_USER
    install -d -m 0755 "$r$home/.config" "$r$home/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' >"$r$home/.config/containers/storage.conf"
    chroot "$r" chown -R "$SBX_BOOT_USER:$SBX_BOOT_USER" "$home/.config"
    grep -q "^$SBX_BOOT_USER:" "$r/etc/subuid" || die "useradd gave $SBX_BOOT_USER no subordinate uids"
    chroot "$r" apt-get clean
}
step "configured the rootfs" configure "$tmp"
du -sh "$tmp" | awk '{ print "rootfs size " $1 }' >&2
touch "$tmp/.sandboxctl-complete"
rm -rf "$rootfs"
mv "$tmp" "$rootfs"
for old in "$SBX_BOOT_CACHE"/rootfs-*; do
    [[ $old == "$rootfs" || ! -d $old ]] || { rm -rf "$old"; log "removed the outdated $old"; }
done
log "rootfs ready: $rootfs"
printf '%s\n' "$rootfs"
