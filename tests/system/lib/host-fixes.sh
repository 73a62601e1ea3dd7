# shellcheck shell=sh
# The host fixes rootless Podman needs on the project's test machines (hybrid cgroup v1,
# no udev, root without CAP_SYS_RESOURCE), measured in the test-environment notes. Each
# is applied only when missing. POSIX sh: sourced by setup-host.sh (bash) and
# build-test-image.sh (sh), which both define `log`.

apply_host_fixes() {
    if [ -r /sys/fs/cgroup/unified/cgroup.controllers ]; then
        read -r controllers </sys/fs/cgroup/unified/cgroup.controllers || true
        for c in $controllers; do
            if ! mountpoint -q "/sys/fs/cgroup/$c"; then
                mkdir -p "/sys/fs/cgroup/$c"
                mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
                log "mounted cgroup v1 controller $c"
            fi
        done
    fi
    conf=/etc/containers/containers.conf
    if ! grep -qs '^[[:space:]]*default_ulimits' "$conf"; then
        mkdir -p /etc/containers
        if grep -qs '^\[containers\]' "$conf"; then
            sed -i '/^\[containers\]/a default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' "$conf"
        else
            printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' >>"$conf"
        fi
        log "set default_ulimits in $conf"
    fi
    for dev in /dev/net/tun /dev/fuse; do
        if [ -e "$dev" ] && [ "$(stat -c %a "$dev")" != 666 ]; then
            chmod 0666 "$dev"
            log "chmod 0666 $dev"
        fi
    done
    if [ "$(findmnt -no PROPAGATION /)" != shared ]; then
        mount --make-rshared /
        log "made / rshared"
    fi
}
