# shellcheck shell=bash
# Shared helpers for the system-test harness scripts (sourced, not executed).

SBX_STATE_DIR=/run/sandboxctl-test
SBX_ENV_FILE=$SBX_STATE_DIR/env
# shellcheck disable=SC2034 # used by the scripts that source this file
SBX_OPT_DIR=/opt/sandboxctl-test
# A 1 MiB tmpfs of the test user's, for the full-disk tests.
# shellcheck disable=SC2034 # used by the scripts that source this file
SBX_SMALL_FS=/run/sandboxctl-test-small
SBX_TEST_USER=${SBX_TEST_USER:-sbxtest}

_sbx_t0=$(date +%s%N)

# log MESSAGE… — one line on stderr, prefixed with the seconds since the script started.
log() {
    local ms=$(( ($(date +%s%N) - _sbx_t0) / 1000000 ))
    printf '[%4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2
}

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# step NAME CMD… — run CMD, then log NAME with how long it took.
step() {
    local name=$1 s e
    shift
    s=$(date +%s%N)
    "$@"
    e=$(date +%s%N)
    log "$name ($(( (e - s) / 1000000 )) ms)"
}

# load_env — read /run/sandboxctl-test/env into shell variables of the current shell
# (KEY=VALUE lines). Nothing is exported: the test user's runtime dir and bus are
# TEST_RUNTIME_DIR and TEST_BUS_ADDRESS, never XDG_RUNTIME_DIR/DBUS_SESSION_BUS_ADDRESS of
# a root process (a root podman with the test user's runtime dir creates root-owned
# directories there, and that user's containers then fail on a fresh machine).
load_env() {
    [[ -r $SBX_ENV_FILE ]] || die "$SBX_ENV_FILE is missing: run 'tests/system/setup-host.sh' first"
    local line key value
    while IFS= read -r line || [[ -n $line ]]; do
        [[ -z $line || $line == \#* ]] && continue
        key=${line%%=*}
        value=${line#*=}
        [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || die "bad line in $SBX_ENV_FILE: $line"
        # Files written before the keys were renamed.
        case $key in
            XDG_RUNTIME_DIR) key=TEST_RUNTIME_DIR ;;
            DBUS_SESSION_BUS_ADDRESS) key=TEST_BUS_ADDRESS ;;
        esac
        printf -v "$key" '%s' "$value"
    done <"$SBX_ENV_FILE"
}

# user_manager_state — SystemState of the test user's manager, or "down".
user_manager_state() {
    local uid=$1 user=$2 home=$3
    setpriv --reuid="$uid" --regid="$(id -g "$user")" --init-groups \
        env -i HOME="$home" USER="$user" LOGNAME="$user" PATH=/usr/bin:/bin \
        XDG_RUNTIME_DIR="/run/user/$uid" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" \
        systemctl --user show -p SystemState --value 2>/dev/null || echo down
}

# The Debian mirror this machine already uses (never write a host name into the repo).
debian_mirror() {
    local src=/etc/apt/sources.list.d/debian.sources uri
    if [[ -r $src ]]; then
        uri=$(awk '/^URIs:/ { print $2; exit }' "$src")
    fi
    if [[ -z ${uri:-} && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [[ -n ${uri:-} ]] || die "cannot find the Debian mirror in $src or /etc/apt/sources.list"
    printf '%s\n' "$uri"
}
