#!/usr/bin/env bash
# Builds the Debian package of sandboxctl from this checkout:
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR]
#
# A release build of sandboxctl (or the binary given with --binary), staged into a tree
# and packed with `dpkg-deb --root-owner-group --build`; prints the path of the .deb.
# Runs as a normal user; needs dpkg-dev (dpkg-shlibdeps) and binutils (strip).
#
# The package holds /usr/bin/sandboxctl; every template unit of systemd/ in
# /usr/lib/systemd/user with its ExecStart= pointing at /usr/bin/sandboxctl (instead of
# the per-user copy in ~/.local/libexec/sandboxctl); the image build context in
# /usr/share/sandboxctl/image (the binary embeds the same files for `image build`); the
# completion scripts for bash, zsh and fish and a man page per command, both generated
# by the binary from its clap definitions; copyright and changelog.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

binary=
out=$root/target/debian
while [[ $# -gt 0 ]]; do
    case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    *) echo "build-deb.sh: unknown argument $1 (use --binary PATH, --out DIR)" >&2; exit 2 ;;
    esac
done

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null ||
        { echo "build-deb.sh: $tool is missing: install dpkg-dev and binutils" >&2; exit 1; }
done

# The version is Cargo.toml's (the [package] table comes first).
version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' Cargo.toml | head -n 1)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    { echo "build-deb.sh: no version found in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

if [[ -z $binary ]]; then
    cargo build --release --locked --bin sandboxctl >&2
    binary=${CARGO_TARGET_DIR:-$root/target}/release/sandboxctl
fi
[[ -x $binary ]] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 1; }

# Reproducible dates: the last commit's, else now.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/sandboxctl_${version}_$arch
umask 022

install -D -m 0755 "$binary" "$stage/usr/bin/sandboxctl"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/sandboxctl"
exe=$stage/usr/bin/sandboxctl

# Every template unit, run by the packaged binary. A unit that still names another
# sandboxctl (the per-user copy) after the rewrite would be a packaging bug.
install -d "$stage/usr/lib/systemd/user"
units=0
for unit in systemd/*.service systemd/*.socket systemd/*.timer systemd/*.path; do
    [[ -e $unit ]] || continue
    sed -e 's|%h/\.local/libexec/sandboxctl/sandboxctl|/usr/bin/sandboxctl|g' \
        "$unit" >"$stage/usr/lib/systemd/user/$(basename "$unit")"
    chmod 0644 "$stage/usr/lib/systemd/user/$(basename "$unit")"
    units=$((units + 1))
done
[[ $units -gt 0 ]] || { echo "build-deb.sh: no unit files in systemd/" >&2; exit 1; }
if grep -n 'libexec/sandboxctl' "$stage"/usr/lib/systemd/user/* | grep -v '^[^:]*:[0-9]*:#'; then
    echo "build-deb.sh: a packaged unit still runs the per-user copy of sandboxctl" >&2
    exit 1
fi

# The image build context, as tracked in git (the binary embeds the same files).
while IFS= read -r f; do
    mode=0644
    [[ -x $f ]] && mode=0755
    install -D -m "$mode" "$f" "$stage/usr/share/sandboxctl/$f"
done < <(git ls-files image)

# Completions and man pages from the binary itself.
"$exe" completions bash | install -D -m 0644 /dev/stdin "$stage/usr/share/bash-completion/completions/sandboxctl"
"$exe" completions zsh | install -D -m 0644 /dev/stdin "$stage/usr/share/zsh/vendor-completions/_sandboxctl"
"$exe" completions fish | install -D -m 0644 /dev/stdin "$stage/usr/share/fish/vendor_completions.d/sandboxctl.fish"
"$exe" man "$work/man" >/dev/null
install -d "$stage/usr/share/man/man1"
for page in "$work"/man/*.1; do
    name=$(basename "$page")
    gzip -9n <"$page" >"$stage/usr/share/man/man1/$name.gz"
done
chmod 0644 "$stage"/usr/share/man/man1/*

# Documentation: copyright (machine-readable) and the changelog of a native package.
doc=$stage/usr/share/doc/sandboxctl
install -d "$doc"
year=$(date -u -d "@$epoch" +%Y)
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sandboxctl
Source: the sandboxctl repository

Files: *
Copyright: $year sandboxctl developers
License: MIT

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the "Software"),
 to deal in the Software without restriction, including without limitation
 the rights to use, copy, modify, merge, publish, distribute, sublicense,
 and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF
maintainer="sandboxctl developers <sandboxctl@users.noreply.github.com>"
{
    printf 'sandboxctl (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Release %s, built from commit %s.\n\n' "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$epoch")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc"/*

# Control: the shared libraries the binary links (dpkg-shlibdeps), and what a host
# needs to run rootless Podman sandboxes under a systemd user manager. tmux and socat
# run inside the image, not on the host.
install -d "$work/debian" "$stage/DEBIAN"
printf 'Source: sandboxctl\n\nPackage: sandboxctl\nArchitecture: any\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O "$exe" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || { echo "build-deb.sh: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }
size=$(du -sk --apparent-size "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: sandboxctl
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $shlibs, podman (>= 4.3), uidmap, catatonit, systemd, dbus-user-session
Recommends: slirp4netns | passt, fuse-overlayfs
Section: admin
Priority: optional
Description: per-client locked-down coding-agent sandboxes on rootless Podman
 sandboxctl gives each client its own always-on sandbox for a coding agent
 (Claude Code, Codex or a shell): a rootless Podman container run by the
 user's systemd through a Quadlet unit (or a plain service where Podman has
 no Quadlet), with its own data, credentials and a socket-activated egress
 proxy that lets out only the hosts the client's policy allows.
 .
 The package ships the proxy's systemd user template units, so sandboxctl
 writes no unit templates or binaries into users' homes.
EOF
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/sandboxctl_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
