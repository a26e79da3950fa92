#!/usr/bin/env bash
# Fetches the Debian kernel the cgroup v2 tier boots, without installing it on this machine:
# `apt-get download` + `dpkg-deb -x` into tests/kernel/.work/kernel (gitignored), so no
# initramfs or bootloader hook ever runs here. The generic flavour, not -cloud-: that one
# lacks 9p. The ABI is pinned; when the archive no longer carries it, the one the
# `linux-image-amd64` meta-package currently points at is used instead (the release it got
# is written to .work/kernel/release and into every recorded trace).
set -euo pipefail
cd "$(dirname "$0")"

PINNED_PACKAGE="${MEMORYGUARD_KERNEL_PACKAGE:-linux-image-6.1.0-56-amd64}"
WORK=.work
DEST="$WORK/kernel"

if [ -f "$DEST/release" ] && [ -f "$DEST/boot/vmlinuz-$(cat "$DEST/release")" ]; then
  echo "fetch-kernel: $(cat "$DEST/release") already present"
  exit 0
fi

package_available() { apt-cache show "$1" >/dev/null 2>&1; }

pick_package() {
  if package_available "$PINNED_PACKAGE"; then
    echo "$PINNED_PACKAGE"
    return
  fi
  # awk reads to the end (no early exit): an early exit would SIGPIPE apt-cache under pipefail.
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ && !found {print $2; found = 1}'
}

package="$(pick_package)"
if [ -z "$package" ] && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  package="$(pick_package)"
fi
if [ -z "$package" ]; then
  echo "fetch-kernel: no linux-image-*-amd64 package known to apt (run apt-get update)" >&2
  exit 1
fi

rm -rf "$WORK/download" "$DEST"
mkdir -p "$WORK/download" "$DEST"
# apt drops privileges to _apt for downloads; a directory it may write keeps it quiet.
chmod 0777 "$WORK/download"
(cd "$WORK/download" && apt-get download -q "$package")
dpkg-deb -x "$WORK"/download/"$package"_*.deb "$DEST"
rm -rf "$WORK/download"

release="$(ls "$DEST/lib/modules")"
echo "$release" >"$DEST/release"
echo "fetch-kernel: $package -> $DEST (release $release)"
