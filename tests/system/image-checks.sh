#!/bin/bash
# Checks the agent image the way the sandbox runs it: rootless, --userns=keep-id, all
# capabilities dropped, no-new-privileges, read-only root, no network, catatonit init,
# a bind-mounted home with a tmpfs ~/.cache, tmpfs /tmp, the client's dirs bind-mounted.
#
#   tests/system/image-checks.sh [IMAGE]     (default localhost/agent-sandbox:latest)
#
# Run it as a rootless user whose podman works. Run as root, it picks the test user
# (TEST_USER from /run/sandboxctl-test/env, else a throwaway user "sbximg" it creates),
# copies IMAGE from root's store into that user's store if needed and re-runs itself as
# that user.
#
# Prints one PASS/FAIL line per check and a final "N passed, M failed"; exits 1 if any
# check failed.
set -u

IMAGE=${1:-localhost/agent-sandbox:latest}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-30}

# ---------------------------------------------------------------- as root: hand over
if [ "$(id -u)" = 0 ]; then
    user=
    if [ -r /run/sandboxctl-test/env ]; then
        user=$(sed -n 's/^\(export \)\{0,1\}TEST_USER=["'\'']\{0,1\}\([^"'\'']*\).*/\2/p' /run/sandboxctl-test/env | head -1)
    fi
    if [ -z "$user" ]; then
        user=sbximg
        if ! id "$user" >/dev/null 2>&1; then
            useradd -m -s /bin/bash "$user"
        fi
        home=$(getent passwd "$user" | cut -d: -f6)
        if [ ! -e "$home/.config/containers/storage.conf" ]; then
            install -d -o "$user" -g "$user" "$home/.config" "$home/.config/containers"
            printf '[storage]\ndriver = "overlay"\n' >"$home/.config/containers/storage.conf"
            chown "$user:" "$home/.config/containers/storage.conf"
        fi
    fi
    uid=$(id -u "$user") || exit 1
    gid=$(id -g "$user")
    home=$(getent passwd "$user" | cut -d: -f6)
    run_dir=/run/user/$uid
    if [ ! -d "$run_dir" ]; then
        install -d -m 0700 -o "$uid" -g "$gid" "$run_dir"
    fi
    as_user() {
        (cd / && setpriv --reuid "$uid" --regid "$gid" --init-groups \
            env -i HOME="$home" USER="$user" LOGNAME="$user" XDG_RUNTIME_DIR="$run_dir" \
            PATH=/usr/local/bin:/usr/bin:/bin DEADLINE_SECONDS="$DEADLINE_SECONDS" "$@")
    }
    id_root=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    id_user=$(as_user podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    if [ -n "$id_root" ] && [ "$id_root" != "$id_user" ]; then
        echo "image-checks: copying $IMAGE into $user's store"
        podman save "$IMAGE" | as_user podman load -q >/dev/null || exit 1
    fi
    script=$(readlink -f "$0")
    tmp_script=$(mktemp /tmp/image-checks.XXXXXX)
    cp "$script" "$tmp_script"
    chmod 0755 "$tmp_script"
    echo "image-checks: running as $user (uid $uid)"
    as_user "$tmp_script" "$IMAGE"
    status=$?
    rm -f "$tmp_script"
    exit "$status"
fi

# ---------------------------------------------------------------- as the rootless user
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $1${2:+: $2}"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }

if ! podman image exists "$IMAGE"; then
    echo "image-checks: $IMAGE is not in $(id -un)'s podman store" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/image-checks.XXXXXX")
containers=()
cleanup() {
    for c in "${containers[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1; done
    rm -rf "$state"
}
trap cleanup EXIT
mkdir -p "$state/home" "$state/claude" "$state/codex" "$state/history" "$state/project"

# The sandbox's runtime contract (see src/host/image/ and the Quadlet template).
SANDBOX=(
    --cap-drop=ALL --security-opt=no-new-privileges --read-only --network=none
    --userns=keep-id --init
    -v "$state/home:/home/agent" --tmpfs /home/agent/.cache --tmpfs /tmp
    -v "$state/claude:/home/agent/.claude" -v "$state/codex:/home/agent/.codex"
    -v "$state/history:/home/agent/.history" -v "$state/project:$state/project"
    -w "$state/project"
    -e SANDBOX_CLIENT=checks -e HOME=/home/agent
    -e CLAUDE_CONFIG_DIR=/home/agent/.claude -e CODEX_HOME=/home/agent/.codex
    -e HISTFILE=/home/agent/.history/bash_history
)

run() { podman run --rm "${SANDBOX[@]}" "$IMAGE" "$@" 2>&1; }

# A one-shot command succeeds; its first output line is shown.
check_command() {
    local name=$1
    shift
    local out
    if out=$(run "$@"); then
        pass "$name" "$(head -1 <<<"$out")"
    else
        fail "$name" "$(tail -3 <<<"$out" | tr '\n' ' ')"
    fi
}

check_command "claude --version" claude --version
check_command "codex --version" codex --version
# The explicit modes agent-session gives each autonomy still exist in the image's agents
# (an agent update that drops one would start it in its own default instead).
out=$(run sh -c 'claude --help; codex --help')
for want in '"manual"' 'on-request:' 'never:'; do
    if grep -qF -- "$want" <<<"$out"; then
        pass "agent modes offer $want"
    else
        fail "agent modes offer $want" "not in claude --help / codex --help"
    fi
done
check_command "tmux -V" tmux -V
check_command "git --version" git --version
check_command "python3 --version" python3 --version
check_command "gh --version" gh --version

# Git's credential helper comes from the read-only /etc/gitconfig, and answers only a
# listed host, only with GH_TOKEN, never writing it anywhere.
out=$(run sh -c 'git config --system credential.helper
  printf "protocol=https\nhost=github.com\n\n" | GH_TOKEN=t0k git credential fill 2>&1 | grep password=
  printf "protocol=https\nhost=evil.example\n\n" | GH_TOKEN=t0k GIT_TERMINAL_PROMPT=0 git credential fill 2>&1 | grep password=
  printf "protocol=http\nhost=github.com\n\n" | GH_TOKEN=t0k GIT_TERMINAL_PROMPT=0 git credential fill 2>&1 | grep password=
  printf "protocol=http\nhost=127.0.0.1:8080\n\n" | SANDBOX_GIT_CREDENTIAL_HOSTS="https://x.example http://127.0.0.1:8080" GH_TOKEN=t0k git credential fill 2>&1 | grep password=
  touch /etc/gitconfig 2>/dev/null && echo "gitconfig writable"
  grep -rl t0k "$HOME" 2>/dev/null')
want=$(printf '/usr/local/bin/git-credential-sandbox\npassword=t0k\npassword=t0k')
if [ "$out" = "$want" ]; then
    pass "git credential helper answers listed hosts only"
else
    fail "git credential helper answers listed hosts only" "$(tr '\n' ' ' <<<"$out")"
fi

out=$(run node --version)
major=$(sed -n 's/^v\([0-9]*\)\..*/\1/p' <<<"$out")
if [ -n "$major" ] && [ "$major" -ge 22 ]; then
    pass "node --version >= 22" "$out"
else
    fail "node --version >= 22" "$out"
fi

out=$(run sh -c 'for t in rg ssh curl socat less ps npm bash; do command -v "$t" >/dev/null || echo "missing $t"; done')
if [ -z "$out" ]; then pass "rg ssh curl socat less ps npm present"; else fail "tools present" "$out"; fi

host_uid=$(id -u)
out=$(run sh -c 'echo "$(id -u) $(id -un) $HOME"; touch /usr/probe 2>/dev/null && echo "root fs writable"; touch "$HOME/probe" || echo "home not writable"; touch "$PWD/probe" || echo "project not writable"')
if [ "$out" = "$host_uid $(id -un) /home/agent" ] && [ -e "$state/project/probe" ]; then
    pass "keep-id user, read-only root, writable home and project" "$out"
else
    fail "keep-id user, read-only root, writable home and project" "$(tr '\n' ' ' <<<"$out")"
fi

out=$(run sh -c 'find / -xdev -type f -perm /6000 2>/dev/null; command -v sudo')
if [ -z "$out" ]; then pass "no setuid/setgid files, no sudo"; else fail "no setuid/setgid files, no sudo" "$(tr '\n' ' ' <<<"$out")"; fi

# ------------------------------------------------------------------ the entry program
# Polls until "$@" succeeds or the deadline passes.
wait_for() {
    local end=$((SECONDS + DEADLINE_SECONDS))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}

start_sandbox() { # NAME AGENT
    containers+=("$1")
    podman run -d --name "$1" "${SANDBOX[@]}" -e SANDBOX_AGENT="$2" "$IMAGE" >/dev/null
}

# A process of the session's pane (the pane's program is a session leader) matches the
# agent's pattern.
pane_runs() { # CONTAINER SESSION PATTERN
    local pid
    pid=$(podman exec "$1" tmux display -p -t "$2" '#{pane_pid}') || return 1
    podman exec "$1" ps -o args= -s "$pid" | grep -Eq "$3"
}
pane_shows() { # CONTAINER SESSION TEXT
    podman exec "$1" tmux capture-pane -p -t "$2" | grep -qF "$3"
}

# The session ran the agent: its process is there, or (Claude Code exits at once when it
# cannot reach its API, e.g. with --network=none) its screen and agent-session's notice.
agent_seen() { # CONTAINER SESSION AGENT
    pane_runs "$1" "$2" "${pattern[$3]}" ||
        { [ -n "${banner[$3]:-}" ] && pane_shows "$1" "$2" "${banner[$3]}" && pane_shows "$1" "$2" "agent-session: $3 exited"; }
}

declare -A banner=([claude]='Claude Code')
declare -A pattern=(
    [claude]='(^|/)claude( |$)'
    [codex]='codex.* --sandbox danger-full-access'
    [shell]='^(-bash|bash -l)'
)

for agent in claude codex shell; do
    c=image-checks-$agent-$$
    name="entry: session main runs $agent"
    if ! start_sandbox "$c" "$agent"; then
        fail "$name" "podman run failed"
        continue
    fi
    if ! wait_for podman exec "$c" tmux has-session -t main; then
        fail "$name" "no tmux session 'main' after ${DEADLINE_SECONDS}s: $(podman logs "$c" 2>&1 | tail -3 | tr '\n' ' ')"
    elif ! wait_for agent_seen "$c" main "$agent"; then
        fail "$name" "pane runs: $(podman exec "$c" tmux display -p -t main '#{pane_current_command}')"
    elif ! wait_for eval "[ -n \"\$(podman exec $c tmux capture-pane -p -t main | tr -d '[:space:]')\" ]"; then
        fail "$name" "the pane stays empty"
    else
        pid=$(podman exec "$c" tmux display -p -t main '#{pane_pid}')
        seen=$(podman exec "$c" ps -o args= -s "$pid" | grep -Em1 "${pattern[$agent]}" | cut -c1-50)
        pass "$name" "process '${seen:-exited}', screen '$(podman exec "$c" tmux capture-pane -p -t main | grep -m1 '[[:alnum:]]' | sed 's/^ *//' | cut -c1-50)'"
    fi
done

c=image-checks-claude-$$
name="entry: a second session (new-session -A) runs the agent too"
if podman exec "$c" tmux new-session -d -A -s second && wait_for agent_seen "$c" second claude; then
    pass "$name"
else
    fail "$name" "$(podman exec "$c" tmux display -p -t second '#{pane_current_command}' 2>&1)"
fi

name="entry: the session keeps a shell after the agent exits"
pid=$(podman exec "$c" tmux display -p -t main '#{pane_pid}')
podman exec "$c" pkill -TERM -P "$pid" # if it is still running
if wait_for pane_shows "$c" main "agent-session: claude exited" &&
    wait_for eval "[ \"\$(podman exec $c tmux display -p -t main '#{pane_current_command}')\" = bash ]"; then
    pass "$name"
else
    fail "$name" "$(podman exec "$c" tmux capture-pane -p -t main 2>&1 | grep . | tail -2 | tr '\n' ' ')"
fi

name="entry: the container stays up when every session has ended"
podman exec "$c" tmux kill-session -t main
podman exec "$c" tmux kill-session -t second
if [ "$(podman exec "$c" tmux list-sessions 2>/dev/null | wc -l)" = 0 ] &&
    [ "$(podman inspect --format '{{.State.Running}}' "$c")" = true ] &&
    podman exec "$c" tmux new-session -d -A -s main &&
    wait_for agent_seen "$c" main claude; then
    pass "$name" "new-session -A made a new 'main' running claude"
else
    fail "$name" "$(podman inspect --format '{{.State.Status}}' "$c")"
fi

name="entry: podman stop exits 0 quickly"
start=$SECONDS
podman stop -t 10 "$c" >/dev/null
took=$((SECONDS - start))
code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
if [ "$code" = 0 ] && [ "$took" -lt 5 ]; then
    pass "$name" "exit $code in ${took}s"
else
    fail "$name" "exit $code in ${took}s"
fi

c=image-checks-codex-$$
name="entry: exits non-zero when the tmux server dies"
podman exec "$c" tmux kill-server
code=$(timeout "$DEADLINE_SECONDS" podman wait "$c")
if [ -n "$code" ] && [ "$code" != 0 ]; then
    pass "$name" "exit $code"
else
    fail "$name" "exit '${code}'"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
