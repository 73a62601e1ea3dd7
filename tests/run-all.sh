#!/usr/bin/env bash
# The project's whole test command: formatting, lints, unit and CLI tests, the image
# checks and the system tests on a real systemd user manager with rootless Podman.
#
#   tests/system/setup-host.sh   # once per boot (idempotent)
#   tests/run-all.sh
#
# Runs as root (it builds the image in root's store and runs the system tests as the
# unprivileged test user through tests/system/as-user.sh, then again inside a booted
# Debian 13 system through tests/boot/run.sh); a normal user is taken there with sudo,
# and cargo then runs as that user, so the checkout and ~/.cargo stay theirs.
# Extra arguments are passed to the system test binary, e.g.
# `tests/run-all.sh enable_writes_unit` to run one system test.
# Exits non-zero if any step failed, after running every step it can.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
# shellcheck source-path=SCRIPTDIR source=system/lib/common.sh
. "$root/tests/system/lib/common.sh"

bin_dir=/var/tmp/sandboxctl-test/bin

if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (the system tests switch to the test user), or install sudo"
    # The caller's PATH keeps their cargo; root's tools (iptables for Podman's network,
    # debootstrap) live in the sbin directories a normal user's PATH lacks.
    exec sudo -- env PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" "$0" "$@"
fi

# as_invoker CMD… — CMD as the user who ran this script through sudo, else as root.
as_invoker() {
    if [[ -n ${SUDO_UID:-} && ${SUDO_UID:-0} -ne 0 ]]; then
        setpriv --reuid="$SUDO_UID" --regid="${SUDO_GID:?}" --init-groups \
            env HOME="$(getent passwd "$SUDO_UID" | cut -d: -f6)" PATH="$PATH" "$@"
    else
        "$@"
    fi
}

# --- prerequisites: fail loudly, never skip -------------------------------------------
[[ -r $SBX_ENV_FILE ]] || die "$SBX_ENV_FILE is missing: the host is not prepared for the system tests. Run 'tests/system/setup-host.sh' first."
load_env
state=$(user_manager_state "$TEST_UID" "$TEST_USER" "$TEST_HOME")
[[ $state == running || $state == degraded ]] ||
    die "the systemd user manager of $TEST_USER is not running (state: $state). Run 'tests/system/setup-host.sh' again."
[[ -x $SANDBOXCTL_QUADLET ]] || die "the Quadlet generator $SANDBOXCTL_QUADLET is missing. Run 'tests/system/setup-host.sh' again."
export SANDBOXCTL_QUADLET

results=()
failed=0
# run NAME CMD… — run one step, record PASS/FAIL with its duration, keep going.
run() {
    local name=$1 s e rc
    shift
    printf '\n==> %s\n' "$name" >&2
    s=$(date +%s%N)
    "$@"
    rc=$?
    e=$(date +%s%N)
    if [[ $rc -eq 0 ]]; then
        results+=("PASS  $name ($(( (e - s) / 1000000 )) ms)")
    else
        results+=("FAIL  $name (exit $rc, $(( (e - s) / 1000000 )) ms)")
        failed=$((failed + 1))
    fi
    return $rc
}

# Every shell script in the repository (a `#!…sh` first line), sources followed.
shellcheck_all() {
    local f scripts=()
    command -v shellcheck >/dev/null || { echo "shellcheck is not installed (setup-host.sh installs it)" >&2; return 1; }
    while IFS= read -r f; do
        [[ $(head -n 1 "$f" 2>/dev/null) =~ ^\#!.*(ba)?sh ]] && scripts+=("$f")
    done < <(as_invoker git ls-files)
    scripts+=(tests/system/lib/*.sh tests/boot/lib.sh tests/bench/lib.sh image/profile.sh)
    echo "shellcheck: ${#scripts[@]} scripts"
    shellcheck -x "${scripts[@]}"
}
run "shellcheck" shellcheck_all
run "cargo fmt --check" as_invoker cargo fmt --all --check
run "cargo clippy" as_invoker cargo clippy --all-targets --features system-tests -- -D warnings
run "cargo test" as_invoker cargo test --all-targets
# The property tests for a time budget each (four targets: 40 s each keeps the step under
# three minutes), in the test profile `cargo test` has just built: a release build of the
# test dependencies would add five minutes, and overflow checks stay on. The long release
# run's totals are in docs/testing.md, "Reliability".
run "fuzz: 40 s per target" as_invoker tests/fuzz.sh --dev --seconds 40
# The Kubernetes export against pinned schemas (venv under /var/cache, made on first use).
run "kube export schemas" tests/kube/validate.sh
# The same exports through kubectl's client dry run, against a discovery-only stub API.
run "kube export: kubectl apply --dry-run=client" tests/kube/kubectl-dry-run.sh

# --- build the binaries the test user runs --------------------------------------------
build_system_tests() {
    local json exe
    # With the test hooks (a kill at a checkpoint, the keyed proxy's test CA and address):
    # the system tests drive them; release and package builds have none.
    as_invoker cargo build --bin sandboxctl --features system-tests || return 1
    json=$(as_invoker cargo test --features system-tests --test system --no-run --message-format=json) || return 1
    exe=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "system" and .executable != null) | .executable' <<<"$json" | tail -n 1)
    [[ -n $exe && -x $exe ]] || {
        echo "cannot find the system test binary in cargo's output" >&2
        return 1
    }
    install -d -m 0755 /var/tmp/sandboxctl-test "$bin_dir"
    install -m 0755 "$exe" "$bin_dir/system-tests"
    install -m 0755 target/debug/sandboxctl "$bin_dir/sandboxctl"
}
run "build sandboxctl and the system tests" build_system_tests
built=$?

# The package's release build runs in the background from here, while the image steps
# below (mostly package downloads and unpacking) run; the package step waits for it.
# Nothing in it touches the test user or the image stores.
deb_out=/var/tmp/sandboxctl-test/deb-build.out
deb_log=/var/tmp/sandboxctl-test/deb-build.log
deb_pid=
deb_started=0
if [[ $built -eq 0 ]]; then
    as_invoker packaging/build-deb.sh --out "$root/target/debian" >"$deb_out" 2>"$deb_log" &
    deb_pid=$!
    deb_started=$SECONDS
fi

# --- the product's own image build ------------------------------------------------------
# `sandboxctl image build` (root's store, where build-test-image.sh left the offline base
# and the layer cache) from the offline base with the host's extra CAs, as a user behind
# a TLS-intercepting proxy would run it; then the agents in what it built.
image_build() {
    local tag=localhost/agent-sandbox:image-build-check out certs=()
    for f in /usr/local/share/ca-certificates/*.crt; do
        [[ -e $f ]] && certs+=(--ca-cert "$f")
    done
    out=$(target/debug/sandboxctl image build --base localhost/debian:bookworm --tag "$tag" "${certs[@]}") || return 1
    printf '%s\n' "$out"
    grep -q "^built $tag in" <<<"$out" || { echo "no summary line for $tag" >&2; return 1; }
    grep -Eq '^  Claude Code  [0-9]' <<<"$out" || { echo "no Claude Code version in the summary" >&2; return 1; }
    grep -Eq '^  Codex        [0-9]' <<<"$out" || { echo "no Codex version in the summary" >&2; return 1; }
    podman run --rm --network=none --cap-drop=all --read-only "$tag" \
        sh -c 'claude --version && codex --version' || return 1
    # The image carries the very sandboxctl that built it, root's and 0755, and it runs
    # there (the exported proxy's binary).
    local want got
    want="$(sha256sum <target/debug/sandboxctl | cut -d' ' -f1) 0 755 sandboxctl"
    got=$(podman run --rm --network=none --cap-drop=all --read-only --user 65534:65534 "$tag" \
        sh -c 'printf "%s %s %s\n" "$(sha256sum </usr/local/bin/sandboxctl | cut -d" " -f1)" \
            "$(stat -c "%u %a" /usr/local/bin/sandboxctl)" "$(sandboxctl --version | cut -d" " -f1)"') || return 1
    [[ $got == "$want" ]] || { echo "the image's /usr/local/bin/sandboxctl: $got, want $want" >&2; return 1; }
    echo "the image carries this sandboxctl: $got"
}
if [[ $built -eq 0 ]]; then
    run "sandboxctl image build (offline base, host CAs)" image_build
fi

# The same image FROM a base that already has node and npm in /usr/local/bin (official
# Node images, company bases): it builds, and the agents get our Node 22. Only the final
# stage is built; the fetch stages come from the layer cache. Removes what it made.
image_build_node_base() {
    SANDBOXCTL_BIN="$bin_dir/sandboxctl" "$root/tests/system/image-node-base.sh"
}
if [[ $built -eq 0 ]]; then
    run "image build on a base with its own Node" image_build_node_base
else
    results+=("FAIL  image build on a base with its own Node (no sandboxctl built)")
    failed=$((failed + 1))
fi

# --- the test image, current with image/ ------------------------------------------------
# setup-host.sh built it once; a checkout whose image/ changed since (or a store that lost
# it) gets it rebuilt and loaded here, so no lane tests an image older than its code.
# Skipped in seconds when the image's input hash matches.
if [[ $SANDBOXCTL_TEST_IMAGE == localhost/agent-sandbox:latest ]]; then
    run "test image current with image/ ($SANDBOXCTL_TEST_IMAGE)" \
        "$root/tests/system/build-test-image.sh" --binary "$bin_dir/sandboxctl" --load-into "$TEST_USER"
fi

# --- checks as the test user ----------------------------------------------------------
if [[ -x $root/tests/system/image-checks.sh ]]; then
    # A copy the test user can read wherever the checkout lives.
    install -m 0755 "$root/tests/system/image-checks.sh" "/var/tmp/sandboxctl-test/image-checks.sh"
    run "image checks ($SANDBOXCTL_TEST_IMAGE)" \
        "$root/tests/system/as-user.sh" /var/tmp/sandboxctl-test/image-checks.sh "$SANDBOXCTL_TEST_IMAGE"
else
    echo "tests/system/image-checks.sh is missing" >&2
    results+=("FAIL  image checks (tests/system/image-checks.sh is missing)")
    failed=$((failed + 1))
fi

# Two lanes, same assertions: Quadlet units (the generator above), then plain systemd
# services as on a Podman without Quadlet (< 4.4), forced with SANDBOXCTL_QUADLET=none.
# Each lane's time is in the summary.
if [[ $built -eq 0 ]]; then
    run "system tests, Quadlet lane (as $TEST_USER)" \
        env SANDBOXCTL_BIN="$bin_dir/sandboxctl" \
        "$root/tests/system/as-user.sh" "$bin_dir/system-tests" --test-threads=1 "$@"
    run "system tests, plain-service lane (as $TEST_USER, SANDBOXCTL_QUADLET=none)" \
        env SANDBOXCTL_BIN="$bin_dir/sandboxctl" SANDBOXCTL_QUADLET=none \
        "$root/tests/system/as-user.sh" "$bin_dir/system-tests" --test-threads=1 "$@"
else
    results+=("FAIL  system tests (not built)")
    failed=$((failed + 1))
fi

# --- the README's first command: the main job ------------------------------------------
# What step 1 of the README's quick start ends with (tests/system/demo.sh), here with the
# debug binary; the demo client is removed afterwards.
demo() {
    local rc=0
    "$root/tests/system/demo.sh" --binary "$bin_dir/sandboxctl" || rc=$?
    "$root/tests/system/as-user.sh" /var/tmp/sandboxctl-demo/sandboxctl disable demo --purge || rc=1
    return "$rc"
}
if [[ $built -eq 0 ]]; then
    run "the main job (tests/system/demo.sh)" demo
fi

# --- the Debian package -------------------------------------------------------------------
# Built by the invoker (a release build), checked by lintian (no errors), then installed:
# the system tests run against /usr/bin/sandboxctl and the packaged template units, and
# `dpkg -r` must leave none of its files (tests/system/package-lane.sh, which removes the
# package on every exit).
deb=
build_package() {
    local rc=0
    wait "$deb_pid" || rc=$?
    cat "$deb_log" "$deb_out"
    echo "the package's build (started before the image steps) took $((SECONDS - deb_started)) s"
    [[ $rc -eq 0 ]] || return 1
    deb=$(tail -n 1 "$deb_out")
    [[ -f $deb ]] || { echo "build-deb.sh printed no package path" >&2; return 1; }
    echo "built $deb ($(du -h "$deb" | cut -f1))"
    # lintian warns when it runs as root; the invoker runs it where that is not root.
    as_invoker lintian --fail-on error --display-level '>=warning' "$deb"
}
if [[ $built -eq 0 ]]; then
    run "Debian package: build and lintian" build_package
    package_built=$?
    if [[ $package_built -eq 0 ]]; then
        run "system tests, packaged lane (dpkg -i, tests, dpkg -r)" \
            "$root/tests/system/package-lane.sh" "$deb" "$bin_dir/system-tests" "$@"
    else
        results+=("FAIL  system tests, packaged lane (no package)")
        failed=$((failed + 1))
    fi
else
    results+=("FAIL  Debian package (not built)")
    failed=$((failed + 1))
fi

# --- the booted Debian 13 lane ----------------------------------------------------------
# The same system tests on a Debian 13 system booted in systemd-nspawn (systemd as PID 1,
# journald, logind with linger, Podman 5 with its own Quadlet), plus what only such a host
# shows. Its root file system is cached under /var/cache/sandboxctl-test/boot.
if [[ $built -eq 0 ]]; then
    run "booted Debian 13 lane" "$root/tests/boot/run.sh" "$bin_dir/sandboxctl" "$bin_dir/system-tests" "$@"
else
    results+=("FAIL  booted Debian 13 lane (not built)")
    failed=$((failed + 1))
fi

# --- nothing of the test user's is owned by anyone else ----------------------------------
# A root process that touches the test user's runtime dir or home (a root podman with that
# user's XDG_RUNTIME_DIR, say) leaves files the user cannot use: on a fresh machine every
# later rootless container fails. Files owned by the user's subordinate ids are the user's
# own containers' and are fine.
ownership_guard() {
    local sub_start sub_count foreign
    IFS=: read -r _ sub_start sub_count < <(grep "^$TEST_USER:" /etc/subuid | head -n 1)
    [[ -n $sub_start && -n $sub_count ]] || { echo "no /etc/subuid range for $TEST_USER" >&2; return 1; }
    foreign=$(find "$TEST_HOME" "$TEST_RUNTIME_DIR" -xdev -printf '%U %p\n' 2>/dev/null |
        awk -v u="$TEST_UID" -v s="$sub_start" -v n="$sub_count" \
            '$1 != u && ($1 < s || $1 >= s + n) { print }')
    if [[ -n $foreign ]]; then
        echo "owned by another user under $TEST_HOME or $TEST_RUNTIME_DIR:" >&2
        head -n 20 <<<"$foreign" >&2
        return 1
    fi
    echo "every file under $TEST_HOME and $TEST_RUNTIME_DIR belongs to $TEST_USER or its subordinate ids"
}
run "ownership of the test user's files" ownership_guard

printf '\n==> summary\n' >&2
printf '%s\n' "${results[@]}" >&2
if [[ $failed -gt 0 ]]; then
    printf '%d step(s) failed\n' "$failed" >&2
    exit 1
fi
printf 'all steps passed\n' >&2
