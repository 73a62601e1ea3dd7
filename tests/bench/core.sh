#!/usr/bin/env bash
# Benchmarks P1–P5 of issue 4: sandboxctl's own overhead against the raw podman/systemd
# floor, as medians of N runs and ratios. A script, not a timed test: it prints numbers.
#
#   sudo tests/bench/core.sh [RUNS]      # after tests/system/setup-host.sh and a build
#
# As root it re-runs itself as the test user (tests/bench/lib.sh: bench_as_test_user).
# Uses SANDBOXCTL_BIN (default: the copy tests/run-all.sh makes, else
# target/debug/sandboxctl) and SANDBOXCTL_TEST_IMAGE. Creates clients named bench-*,
# removes them at the end.
set -euo pipefail

runs=${1:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
bench_as_test_user core.sh "$runs"

bin=${SANDBOXCTL_BIN:?SANDBOXCTL_BIN is not set}
image=${SANDBOXCTL_TEST_IMAGE:-localhost/agent-sandbox:latest}
sock=bench-host-$$
projects=$HOME/sbx-bench
mkdir -p "$projects"

cleanup() {
    tmux -L "$sock" kill-server 2>/dev/null || true
    local c
    for c in $("$bin" list --json 2>/dev/null | jq -r '.[].client | select(startswith("bench-"))'); do
        "$bin" disable "$c" --purge >/dev/null 2>&1 || echo "cleanup: disable $c failed" >&2
    done
    rm -rf "$projects"
}
trap cleanup EXIT

echo "sandboxctl benchmark: $runs runs each, image $image, $(nproc) cores, $(uname -r)"
mkdir -p "$projects/acme"
"$bin" enable bench-acme "$projects/acme" --agent shell --image "$image" --now >/dev/null

# --- P1: exec ------------------------------------------------------------------------
p1_ours=() p1_raw=()
for ((i = 0; i < runs; i++)); do
    p1_ours+=("$(time_ms "$bin" exec bench-acme -- true)")
    p1_raw+=("$(time_ms podman exec agent-bench-acme true)")
done
a=$(printf '%s\n' "${p1_ours[@]}" | median)
b=$(printf '%s\n' "${p1_raw[@]}" | median)
echo "P1 exec:   sandboxctl exec -- true ${a} ms, podman exec true ${b} ms, ratio $(ratio "$a" "$b") (goal <= 1.05)"

# --- P2: attach to the agent's pane on screen ----------------------------------------
marker=BENCH-READY-$$
"$bin" exec bench-acme -- tmux new-session -d -A -s main >/dev/null 2>&1 || true
"$bin" exec bench-acme -- tmux send-keys -t main "clear; echo $marker" Enter
tmux -L "$sock" -f /dev/null new-session -d -x 160 -y 48 bash --norc --noprofile
# attach_ms CMD — type CMD in a fresh host shell, time until the marker is on screen.
attach_ms() {
    local s e
    tmux -L "$sock" respawn-pane -k bash --norc --noprofile
    sleep 0.2
    tmux -L "$sock" send-keys -l "$1"
    s=$(now_ns)
    tmux -L "$sock" send-keys Enter
    until tmux -L "$sock" capture-pane -p | grep -q "^$marker"; do
        if (($(now_ns) - s > 30000000000)); then
            echo "attach did not show the marker within 30 s: $1" >&2
            tmux -L "$sock" capture-pane -p >&2
            return 1
        fi
    done
    e=$(now_ns)
    awk -v d=$((e - s)) 'BEGIN { printf "%.2f\n", d / 1e6 }'
}
p2_ours=() p2_raw=() p2_orig=()
for ((i = 0; i < runs; i++)); do
    p2_ours+=("$(attach_ms "$bin attach bench-acme")")
    p2_raw+=("$(attach_ms "podman exec -it --detach-keys= agent-bench-acme tmux new-session -A -s main")")
done
# The original tool's path: a new container (and so a new agent) per session.
for ((i = 0; i < (runs < 5 ? runs : 5); i++)); do
    p2_orig+=("$(attach_ms "podman run --rm -it --network none --name bench-orig-$$-$i $image bash -c 'echo $marker; sleep 60'")")
    podman rm -f -t 0 "bench-orig-$$-$i" >/dev/null 2>&1 || true
done
tmux -L "$sock" respawn-pane -k bash --norc --noprofile
a=$(printf '%s\n' "${p2_ours[@]}" | median)
b=$(printf '%s\n' "${p2_raw[@]}" | median)
c=$(printf '%s\n' "${p2_orig[@]}" | median)
echo "P2 attach: sandboxctl attach ${a} ms, podman exec -it tmux attach ${b} ms, ratio $(ratio "$a" "$b") (goal <= 1.1);" \
    "original tool's new container per session ${c} ms (a new agent, not the running one)"

# --- P3: enable vs daemon-reload -----------------------------------------------------
# Twice: enable again with the same settings (nothing to write, so no reload unless
# systemd has an older unit loaded), and with a setting that changes each run (the
# settings and the unit are written, journaled and reloaded).
p3_same=() p3_changed=() p3_raw=()
for ((i = 0; i < runs; i++)); do
    p3_same+=("$(time_ms "$bin" enable bench-acme "$projects/acme" --agent shell --image "$image")")
    p3_raw+=("$(time_ms systemctl --user daemon-reload)")
    autonomy=ask
    ((i % 2)) && autonomy=auto
    p3_changed+=("$(time_ms "$bin" enable bench-acme "$projects/acme" --agent shell --image "$image" --autonomy "$autonomy")")
done
"$bin" enable bench-acme "$projects/acme" --agent shell --image "$image" --autonomy ask >/dev/null 2>&1
a=$(printf '%s\n' "${p3_same[@]}" | median)
c=$(printf '%s\n' "${p3_changed[@]}" | median)
b=$(printf '%s\n' "${p3_raw[@]}" | median)
echo "P3 enable: sandboxctl enable unchanged ${a} ms, systemctl --user daemon-reload ${b} ms, ratio $(ratio "$a" "$b") (goal <= 1.1)"
echo "P3 enable: sandboxctl enable with a changed setting ${c} ms (writes, journal, reload), ratio $(ratio "$c" "$b") (goal <= 1.1)"

names=()
for ((i = 0; i < 100; i++)); do
    names+=("bench-c$i")
done
monitor_log=$(mktemp)
dbus-monitor --session "type='method_call',interface='org.freedesktop.systemd1.Manager',member='Reload'" >"$monitor_log" 2>&1 &
monitor=$!
sleep 0.5
s=$(now_ns)
"$bin" enable "$(
    IFS=,
    echo "${names[*]}"
)" --agent shell --image "$image" >/dev/null
e=$(now_ns)
sleep 0.5
kill "$monitor" 2>/dev/null || true
wait "$monitor" 2>/dev/null || true
reloads=$(grep -c 'member=Reload' "$monitor_log" || true)
rm -f "$monitor_log"
echo "P3 enable of 100 clients in one command: $(((e - s) / 1000000)) ms, Reload calls seen on the bus: $reloads (goal: 1)"

# --- P4: list with 100 clients -------------------------------------------------------
p4=() p4_raw=()
for ((i = 0; i < runs; i++)); do
    p4+=("$(time_ms "$bin" list --json)")
    p4_raw+=("$(time_ms systemctl --user list-units --all --no-pager 'agent-*')")
done
a=$(printf '%s\n' "${p4[@]}" | median)
b=$(printf '%s\n' "${p4_raw[@]}" | median)
echo "P4 list:   sandboxctl list --json with $("$bin" list --json | jq length) clients ${a} ms (goal <= 50 ms); systemctl --user list-units ${b} ms"

# --- P5: idle memory per client ------------------------------------------------------
# PSS and RSS of conmon and every process of the container (no one attached: the init,
# the entry program and the tmux server with its idle agent session).
"$bin" disable bench-acme --purge >/dev/null
mkdir -p "$projects/m1"
"$bin" enable bench-m1 "$projects/m1" --agent shell --image "$image" --now >/dev/null
sleep 2
pid=$(podman inspect -f '{{.State.Pid}}' agent-bench-m1)
conmon=$(podman inspect -f '{{.State.ConmonPid}}' agent-bench-m1)
mapfile -t pids < <(descendants "$pid")
comms=$(for p in "$conmon" "${pids[@]}"; do cat "/proc/$p/comm"; done | paste -sd' ' -)
echo "P5 memory: idle client $(mb "$(mem_kb Pss "$conmon" "${pids[@]}")") MB PSS," \
    "$(mb "$(mem_kb Rss "$conmon" "${pids[@]}")") MB RSS (processes: $comms)"
