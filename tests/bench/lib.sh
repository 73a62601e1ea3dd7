# Helpers the benchmark scripts share; sourced, not run:
#   . "$here/lib.sh"; bench_as_test_user SCRIPT "$@"
# shellcheck shell=bash

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# bench_as_test_user SCRIPT ARG… — as root: copy SCRIPT (a file next to this library) and
# the library where the test user can read them (SANDBOXCTL_BENCH_DIR, default
# /var/tmp/sandboxctl-test/bench) and re-run it as that user (tests/system/as-user.sh),
# with SANDBOXCTL_BIN (default: the copy tests/run-all.sh makes, else target/debug/
# sandboxctl). As any other user: returns.
bench_as_test_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    local script=$1 work=${SANDBOXCTL_BENCH_DIR:-/var/tmp/sandboxctl-test/bench} bin
    shift
    install -d -m 0755 "$work"
    install -m 0755 "$bench_dir/$script" "$work/$script"
    install -m 0644 "$bench_dir/lib.sh" "$work/lib.sh"
    bin=${SANDBOXCTL_BIN:-/var/tmp/sandboxctl-test/bin/sandboxctl}
    if [[ ! -x $bin ]]; then
        install -d -m 0755 /var/tmp/sandboxctl-test/bin
        install -m 0755 "$bench_dir/../../target/debug/sandboxctl" /var/tmp/sandboxctl-test/bin/sandboxctl
        bin=/var/tmp/sandboxctl-test/bin/sandboxctl
    fi
    SANDBOXCTL_BIN=$bin exec "$bench_dir/../system/as-user.sh" "$work/$script" "$@"
}

now_ns() { date +%s%N; }
# median of the numbers on stdin (ms, one per line), printed with 1 decimal.
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# time_ms CMD… — run once, print milliseconds.
time_ms() {
    local s e
    s=$(now_ns)
    "$@" >/dev/null 2>&1
    e=$(now_ns)
    awk -v d=$((e - s)) 'BEGIN { printf "%.2f\n", d / 1e6 }'
}
# median_ms RUNS CMD… — the median of RUNS runs of CMD, in milliseconds.
median_ms() {
    local runs=$1 i
    shift
    for ((i = 0; i < runs; i++)); do
        time_ms "$@"
    done | median
}

# mem_kb FIELD PID… — the sum of FIELD (Pss, Rss, …) of /proc/PID/smaps_rollup, in kB.
mem_kb() {
    local field=$1 pid total=0 kb
    shift
    for pid in "$@"; do
        kb=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
# descendants PID — PID and all its descendants, one per line.
descendants() {
    local pid=$1 child
    echo "$pid"
    # shellcheck disable=SC2013 # each file is one line of space-separated PIDs
    for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
        descendants "$child"
    done
}
# mb KB — kilobytes as megabytes with 1 decimal.
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
