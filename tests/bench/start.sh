#!/usr/bin/env bash
# Start to a working agent: for each agent (shell, Claude Code, Codex), the time from
# `sandboxctl start` until it returns (the agent's process runs: `start` waits for it)
# and until the agent has drawn its first screen in the `main` pane, read with
# `tmux capture-pane` inside the sandbox; no tmux client connects first. Medians of N
# runs, a cold start each (the sandbox is stopped before every run). A script, not a
# timed test: it prints numbers.
#
#   sudo tests/bench/start.sh [RUNS]     # after tests/system/setup-host.sh and a build
#
# "Drawn": the shell's prompt (a line ending in `$` or `#`); for Claude Code and Codex,
# whose first screen without a key is their sign-in screen, three non-empty lines.
set -euo pipefail

runs=${1:-10}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
bench_as_test_user start.sh "$runs"

bin=${SANDBOXCTL_BIN:?SANDBOXCTL_BIN is not set}
image=${SANDBOXCTL_TEST_IMAGE:-localhost/agent-sandbox:latest}
projects=$HOME/sbx-bench-start
mkdir -p "$projects"

cleanup() {
    local a
    for a in shell claude codex; do
        "$bin" disable "bench-start-$a" --purge >/dev/null 2>&1 || true
    done
    rm -rf "$projects"
}
trap cleanup EXIT

# drawn AGENT SCREEN — whether SCREEN (the pane's text) shows AGENT's first screen.
drawn() {
    case $1 in
    shell) grep -Eq '[$#] *$' <<<"$2" ;;
    *) [[ $(grep -c '[^[:space:]]' <<<"$2") -ge 3 ]] ;;
    esac
}

echo "start to agent: $runs cold starts each, image $image, $(nproc) cores, $(uname -r)"
for agent in shell claude codex; do
    c=bench-start-$agent
    mkdir -p "$projects/$agent"
    "$bin" enable "$c" "$projects/$agent" --agent "$agent" --network none --image "$image" >/dev/null
    returned=() screen=()
    for ((i = 0; i < runs; i++)); do
        "$bin" stop "$c" >/dev/null
        s=$(now_ns)
        "$bin" start "$c" >/dev/null
        e=$(now_ns)
        returned+=("$(awk -v d=$((e - s)) 'BEGIN { printf "%.1f\n", d / 1e6 }')")
        until drawn "$agent" "$(podman exec "agent-$c" tmux capture-pane -p -t main 2>/dev/null || true)"; do
            if (($(now_ns) - s > 60000000000)); then
                echo "$agent: no first screen within 60 s:" >&2
                podman exec "agent-$c" tmux capture-pane -p -t main >&2 || true
                exit 1
            fi
        done
        e=$(now_ns)
        screen+=("$(awk -v d=$((e - s)) 'BEGIN { printf "%.1f\n", d / 1e6 }')")
    done
    echo "$agent: start returned (agent running) $(printf '%s\n' "${returned[@]}" | median) ms," \
        "first screen drawn $(printf '%s\n' "${screen[@]}" | median) ms" \
        "(min $(printf '%s\n' "${screen[@]}" | sort -n | head -n 1), max $(printf '%s\n' "${screen[@]}" | sort -n | tail -n 1))"
    "$bin" disable "$c" --purge >/dev/null
done
