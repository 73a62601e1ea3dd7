# shellcheck shell=bash
# Shared settings and helpers of the booted Debian 13 lane (sourced, not executed).
# Needs tests/system/lib/common.sh sourced first (log, die, step).
# shellcheck disable=SC2034 # the settings are used by the scripts that source this file

# The cached root file systems (one per package-list hash) and the per-run copies.
SBX_BOOT_CACHE=${SBX_BOOT_CACHE:-/var/cache/sandboxctl-test/boot}
SBX_BOOT_RUNS=${SBX_BOOT_RUNS:-/var/tmp/sandboxctl-boot}
# The user inside the booted system (not the host's test user: nothing is shared).
SBX_BOOT_USER=sbxboot
SBX_BOOT_SUITE=trixie

# What the booted system needs: systemd as init with logind and the user bus (so linger
# and login sessions exist), journald, rootless Podman with native Quadlet and pasta, and
# the tools the system tests drive (tmux for the "user's terminal", curl for checks, an
# sshd the git-over-SSH test runs as the user; the system's own is masked).
# Changing this list (or the settings written by boot_configure_rootfs) changes the cache
# key, so the next run rebuilds the rootfs.
SBX_BOOT_PACKAGES=(systemd systemd-sysv systemd-container dbus dbus-user-session libpam-systemd
    podman crun uidmap passt catatonit fuse-overlayfs tmux procps iproute2 curl ca-certificates
    util-linux login less git openssh-server)
