#!/usr/bin/env bash
# The packaged lane: installs the Debian package, checks what it installed (the binary,
# man pages, completions), runs system tests as the test user against /usr/bin/sandboxctl
# and the packaged template units, removes the package with `dpkg -r` and checks that no
# file of it is left behind.
#
#   tests/system/package-lane.sh DEB SYSTEM_TESTS [FILTER…]
#
# FILTERs select the system tests (default: lifecycle, attach, disable/purge, the
# allowlist network and boundary tests, doctor and packaging::pk*; the ignored pk tests
# are included by name). Runs as root. While the package is installed, its units in
# /usr/lib/systemd/user replace every user's per-user proxy units, so on a host where
# others run system tests call it under their lock:
#   flock /tmp/sbx-systest.lock tests/system/package-lane.sh DEB SYSTEM_TESTS
# The package is removed on every exit, also on failure; the lane refuses to start if
# sandboxctl is already installed (it removes only what it installed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$here/lib/common.sh"

[[ $(id -u) -eq 0 ]] || die "run as root (it installs a package)"
[[ $# -ge 2 ]] || die "usage: $0 DEB SYSTEM_TESTS [FILTER…]"
deb=$(realpath "$1")
tests=$2
shift 2
filters=("$@")
if [[ ${#filters[@]} -eq 0 ]]; then
    filters=(t1_ t2_ t8_ network::n1_ network::n3_ network::n5_ boundary::b1_ boundary::b6_
        doctor::d1_ packaging::pk)
fi
[[ -r $deb ]] || die "$deb is missing"
[[ -x $tests ]] || die "$tests is not an executable"
load_env

installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' sandboxctl 2>/dev/null || true) == installed ]]
}
installed && die "sandboxctl is already installed here; remove it first (dpkg -r sandboxctl)"

work=$(mktemp -d)
# Which of the package's paths exist before it is installed (/usr/bin does, say): after
# `dpkg -r` every other one must be gone.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^\.\?$' |
    sort >"$work/contents"
while IFS= read -r p; do
    [[ -e $p || -L $p ]] && printf '%s\n' "$p"
done <"$work/contents" >"$work/existed"

cleanup() {
    local rc=$? p left=()
    if installed; then
        echo "package-lane: dpkg -r sandboxctl" >&2
        dpkg -r sandboxctl >/dev/null || rc=1
    fi
    # The test user's manager forgets the removed template units now, not at the next
    # person's `enable`.
    "$here/as-user.sh" systemctl --user daemon-reload || rc=1
    if [[ -s $work/listed ]]; then
        while IFS= read -r p; do
            grep -qxF -- "$p" "$work/existed" && continue
            [[ -e $p || -L $p ]] && left+=("$p")
        done < <(sort -u "$work/listed" "$work/contents")
        if [[ ${#left[@]} -gt 0 ]]; then
            echo "package-lane: dpkg -r left ${#left[@]} file(s) of the package:" >&2
            printf '  %s\n' "${left[@]}" >&2
            rc=1
        else
            echo "package-lane: dpkg -r left none of the package's $(wc -l <"$work/listed") paths" >&2
        fi
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dpkg -i "$deb" >/dev/null
dpkg -L sandboxctl | grep -v '^/\.$' | sort >"$work/listed"
if ! diff <(grep -vxF -f "$work/existed" "$work/contents") <(grep -vxF -f "$work/existed" "$work/listed") >&2; then
    die "dpkg -L sandboxctl differs from the package's contents"
fi
echo "package-lane: installed $(basename "$deb") ($(wc -l <"$work/listed") paths)" >&2

# What the package installed works without the checkout.
/usr/bin/sandboxctl --version
for f in /usr/lib/systemd/user/sandboxctl-proxy@.service /usr/lib/systemd/user/sandboxctl-proxy@.socket \
    /usr/share/bash-completion/completions/sandboxctl /usr/share/zsh/vendor-completions/_sandboxctl \
    /usr/share/fish/vendor_completions.d/sandboxctl.fish /usr/share/sandboxctl/image/Containerfile; do
    [[ -f $f ]] || die "the package did not install $f"
done
grep -qx 'ExecStart=/usr/bin/sandboxctl proxy --client %i --systemd-socket' \
    /usr/lib/systemd/user/sandboxctl-proxy@.service || die "the packaged proxy service does not run /usr/bin/sandboxctl"
page=$(man -w sandboxctl-enable) || die "man does not find sandboxctl-enable"
warnings=$(MANWIDTH=80 man --warnings sandboxctl-enable 2>&1 >/dev/null)
[[ -z $warnings ]] || die "man sandboxctl-enable warns: $warnings"
echo "package-lane: man sandboxctl-enable is $page" >&2

echo "package-lane: system tests on the packaged units, Quadlet lane: ${filters[*]}" >&2
env SANDBOXCTL_BIN=/usr/bin/sandboxctl \
    "$here/as-user.sh" "$tests" --test-threads=1 --include-ignored "${filters[@]}"
echo "package-lane: the same on plain services (SANDBOXCTL_QUADLET=none): packaging::pk" >&2
env SANDBOXCTL_BIN=/usr/bin/sandboxctl SANDBOXCTL_QUADLET=none \
    "$here/as-user.sh" "$tests" --test-threads=1 --include-ignored packaging::pk
