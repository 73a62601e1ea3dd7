#!/usr/bin/env bash
# Many clients (issue 14): CLIENTS enabled allowlist clients, as many of them running as
# the machine holds, and what `list`/`status` cost and an idle client weighs at that
# scale. A script, not a timed test: it prints numbers.
#
#   sudo tests/bench/many-clients.sh [CLIENTS [RUNS]]   # default 100 clients, medians of 20
#
# As root it re-runs itself as the test user (tests/bench/lib.sh: bench_as_test_user).
# Uses SANDBOXCTL_BIN and SANDBOXCTL_TEST_IMAGE as core.sh does. Starts clients one at a
# time until all run, a start fails, MemAvailable would drop below
# SANDBOXCTL_BENCH_MIN_AVAILABLE_MB (default 2048) or SANDBOXCTL_BENCH_START_SECONDS
# (default 480) of starts have passed. Creates clients named bench-many-N and removes
# them at the end, also after a failure or Ctrl-C, then checks that nothing is left.
set -euo pipefail

clients=${1:-100}
runs=${2:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
bench_as_test_user many-clients.sh "$clients" "$runs"

bin=${SANDBOXCTL_BIN:?SANDBOXCTL_BIN is not set}
image=${SANDBOXCTL_TEST_IMAGE:-localhost/agent-sandbox:latest}
floor_mb=${SANDBOXCTL_BENCH_MIN_AVAILABLE_MB:-2048}
budget_s=${SANDBOXCTL_BENCH_START_SECONDS:-480}
prefix=bench-many-
projects=$HOME/sbx-bench-many

# run_timed CMD… — runs CMD; sets `took` (ms) and `err` (its stderr); CMD's status.
took='' err=''
run_timed() {
    local s e rc=0
    s=$(now_ns)
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    e=$(now_ns)
    took=$(awk -v d=$((e - s)) 'BEGIN { printf "%.2f", d / 1e6 }')
    return "$rc"
}
meminfo_kb() { awk -v f="$1:" '$1 == f { print $2 }' /proc/meminfo; }
ours() { "$bin" list --json 2>/dev/null | jq -r --arg p "$prefix" '.[].client | select(startswith($p))'; }
running() { podman ps --format '{{.Names}}' | grep -c "^agent-$prefix" || true; }
# What a run may leave behind: containers, unit files and drop-ins, data, sockets.
leftovers() {
    podman ps -a --format '{{.Names}}' | grep "^agent-$prefix" || true
    find "$HOME/.config/containers/systemd" "$HOME/.config/systemd/user" \
        "$HOME/.local/share/agent-sandbox" "${XDG_RUNTIME_DIR:-/nonexistent}/agent-sandbox" \
        -maxdepth 3 -name "*$prefix*" 2>/dev/null || true
    [[ ! -e $projects ]] || echo "$projects"
}

cleanup() {
    local rc=$? s c n=0 failed=0 left stop_s found
    trap - EXIT INT TERM
    s=$(now_ns)
    mapfile -t found < <(ours)
    # Stops first, four at a time (a stop takes no lock), then one disable each (a
    # disable takes sandboxctl's lock and reloads systemd, so in turn).
    printf '%s\n' "${found[@]}" | grep . | xargs -r -P 4 -n 1 "$bin" stop >/dev/null 2>&1 || true
    stop_s=$((($(now_ns) - s) / 1000000000))
    for c in "${found[@]}"; do
        if "$bin" disable "$c" --purge >/dev/null 2>&1; then
            n=$((n + 1))
        else
            failed=$((failed + 1))
            echo "cleanup: disable $c --purge failed" >&2
        fi
    done
    rm -rf "$projects"
    echo "cleanup: ${#found[@]} clients stopped in $stop_s s (four at a time), $n disabled --purge in" \
        "$((($(now_ns) - s) / 1000000000 - stop_s)) s, $failed failed"
    left=$(leftovers)
    if [[ -n $left ]]; then
        echo "cleanup: left over:" >&2
        echo "$left" >&2
        rc=1
    else
        echo "cleanup: nothing left (podman ps -a, unit dirs, data, runtime dir, projects)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The same four commands and their floor, medians of `runs`.
measure() {
    local what=$1 a args
    for args in "list --json" "status" "status --json" "status ${prefix}0"; do
        # shellcheck disable=SC2086 # the arguments are split on purpose
        a=$(median_ms "$runs" "$bin" $args)
        printf '  %-44s %7s ms  (P4 goal <= 50 ms: %s)\n' "sandboxctl $args" "$a" \
            "$(awk -v a="$a" 'BEGIN { print (a <= 50 ? "met" : "MISSED") }')"
    done
    printf '  %-44s %7s ms  (floor)\n' "systemctl --user list-units 'agent-*'" \
        "$(median_ms "$runs" systemctl --user list-units --all --no-pager 'agent-*')"
    # What `status CLIENT` asks podman (crate::image::state), for the difference.
    printf '  %-44s %7s ms\n' "podman image inspect IMAGE" \
        "$(median_ms "$runs" podman image inspect --format '{{.Id}}' "$image")"
    printf '  %-44s %7s ms\n' "podman container inspect agent-${prefix}0" \
        "$(median_ms "$runs" podman container inspect --format '{{.Image}}' "agent-${prefix}0")"
    printf '  %-44s %7s ms  (%s)\n' "podman ps" "$(median_ms "$runs" podman ps)" "$what"
}

echo "many clients: $clients allowlist clients (agent shell), image $image, medians of $runs," \
    "$(nproc) cores, $(($(meminfo_kb MemTotal) / 1024)) MB RAM, $(uname -r)"
if [[ -n $(ours) ]]; then
    echo "note: $prefix* clients of an earlier run exist; they are removed at the end"
fi

# --- Enable: one command for all, then a project dir each ----------------------------
names=()
for ((i = 0; i < clients; i++)); do
    names+=("$prefix$i")
done
# The first enable after another build also copies sandboxctl to its private place: one
# client first, so the timed enable of all is only that.
mkdir -p "$projects"
if ! "$bin" enable "${names[0]}" --agent shell --image "$image" >/dev/null; then
    echo "enable ${names[0]} failed" >&2
    exit 1
fi
if ! run_timed "$bin" enable "$(
    IFS=,
    echo "${names[*]}"
)" --agent shell --image "$image"; then
    echo "enable of $clients clients failed: $err" >&2
    exit 1
fi
echo "enable of $clients clients in one command (one of them enabled before): $took ms"
# Several clients cannot share project dirs (enable refuses a comma list with dirs), so
# each gets its own in a second enable.
enables=()
for c in "${names[@]}"; do
    mkdir -p "$projects/$c"
    if ! run_timed "$bin" enable "$c" "$projects/$c" --agent shell --image "$image"; then
        echo "enable $c with its project dir failed: $err" >&2
        exit 1
    fi
    enables+=("$took")
done
echo "enable CLIENT PROJECT_DIR, one client after another: median $(printf '%s\n' "${enables[@]}" | median) ms;" \
    "its floor, systemctl --user daemon-reload (the Quadlet generator reads every client's unit):" \
    "$(median_ms 5 systemctl --user daemon-reload) ms (median of 5)"

echo "with $clients enabled, 0 running:"
measure "0 running"

# --- Start one at a time --------------------------------------------------------------
avail0=$(meminfo_kb MemAvailable) shmem0=$(meminfo_kb Shmem) slab0=$(meminfo_kb Slab)
echo "MemAvailable before the first start: $((avail0 / 1024)) MB"
starts=() batch=() started=0 slowest=0 slowest_name='' stopped_by="all started"
t0=$(now_ns)
for c in "${names[@]}"; do
    avail=$(meminfo_kb MemAvailable)
    # Room for one more: twice the average drop so far, at least 256 MB.
    need=$((started > 0 ? 2 * (avail0 - avail) / started : 0))
    need=$((need > 262144 ? need : 262144))
    if ((avail - need < floor_mb * 1024)); then
        stopped_by="MemAvailable $((avail / 1024)) MB would drop below $floor_mb MB"
        break
    fi
    if (($(now_ns) - t0 > budget_s * 1000000000)); then
        stopped_by="time budget of $budget_s s for starts spent"
        break
    fi
    if ! run_timed "$bin" start "$c"; then
        stopped_by="start of $c (number $((started + 1))) failed after $took ms: $err"
        break
    fi
    started=$((started + 1))
    starts+=("$took") batch+=("$took")
    if awk -v a="$took" -v b="$slowest" 'BEGIN { exit !(a > b) }'; then
        slowest=$took slowest_name=$c
    fi
    if ((started % 10 == 0)); then
        echo "  starts $((started - 9))–$started: median $(printf '%s\n' "${batch[@]}" | median) ms," \
            "MemAvailable $(($(meminfo_kb MemAvailable) / 1024)) MB"
        batch=()
    fi
done
starts_s=$((($(now_ns) - t0) / 1000000000))
if ((started == 0)); then
    echo "no client started: $stopped_by" >&2
    exit 1
fi
echo "started $started of $clients in $starts_s s ($stopped_by): median $(printf '%s\n' "${starts[@]}" | median) ms," \
    "slowest $slowest ms ($slowest_name), first ${starts[0]} ms"
sleep 5
n=$(running)
avail1=$(meminfo_kb MemAvailable) shmem1=$(meminfo_kb Shmem) slab1=$(meminfo_kb Slab)
echo "running (podman ps): $n; MemAvailable after 5 s: $((avail1 / 1024)) MB"

echo "with $clients enabled, $n running:"
measure "$n running"

# --- Memory per idle client at that scale --------------------------------------------
# PSS and RSS of every running client's conmon and container process tree, as core.sh's
# P5. PSS shares each shared page among its users, so the sum is what they take
# together; the RSS sum counts shared pages (binaries, libraries) once per process.
mapfile -t inspected < <(podman ps --format '{{.Names}}' | grep "^agent-$prefix" |
    xargs -r podman inspect -f '{{.State.Pid}} {{.State.ConmonPid}}')
pids=()
for line in "${inspected[@]}"; do
    read -r pid conmon <<<"$line"
    pids+=("$conmon")
    mapfile -t -O "${#pids[@]}" pids < <(descendants "$pid")
done
unreadable=0
for p in "${pids[@]}"; do
    [[ -r /proc/$p/smaps_rollup ]] || unreadable=$((unreadable + 1))
done
comms=$(read -r pid conmon <<<"${inspected[0]}" &&
    for p in "$conmon" $(descendants "$pid"); do cat "/proc/$p/comm"; done | paste -sd' ' -)
pss=$(mem_kb Pss "${pids[@]}") rss=$(mem_kb Rss "${pids[@]}")
k=${#inspected[@]}
((k > 0)) || { echo "no running client found by podman ps" >&2; exit 1; }
echo "memory of $k idle clients' conmon + container processes (${#pids[@]} processes, $unreadable unreadable):" \
    "$(mb "$pss") MB PSS, $(mb "$rss") MB RSS in all; per client $(mb $((pss / k))) MB PSS, $(mb $((rss / k))) MB RSS" \
    "(one client's processes: $comms)"
echo "MemAvailable drop over $k clients: $(mb $((avail0 - avail1))) MB, $(mb $(((avail0 - avail1) / k))) MB per client" \
    "(includes kernel memory and page cache, not only the processes; of it Shmem" \
    "$(mb $((shmem1 - shmem0))) MB, Slab $(mb $((slab1 - slab0))) MB)"
proxies=$(pgrep -u "$(id -u)" -c -f "sandboxctl proxy --client $prefix" || true)
active=$(systemctl --user list-units --no-legend --state=active "sandboxctl-proxy@$prefix*.service" | wc -l)
listening=$(systemctl --user list-units --no-legend --state=listening "sandboxctl-proxy@$prefix*.socket" | wc -l)
echo "egress proxies: $proxies \`sandboxctl proxy\` processes, $active proxy services active," \
    "$listening proxy sockets listening (socket-activated: idle clients need none running)"
