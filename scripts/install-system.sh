#!/usr/bin/env bash
# Installs the Debian packages xwvm needs (idempotent). Runs as root, or via sudo.
set -euo pipefail
# bubblewrap: the native-job sandbox (xwvm/worker/sandbox.py); a worker without it refuses
# native jobs. curl and gcc: the tests (the README tour waits on curl; a hostile payload's
# library is built with gcc).
PKGS=(postgresql socat cloud-init mmdebstrap e2fsprogs qemu-utils qemu-system-x86 packer bubblewrap
      curl gcc)
[ -n "${XWVM_EXTRA_PKGS:-}" ] && read -r -a extra <<<"$XWVM_EXTRA_PKGS" && PKGS+=("${extra[@]}")
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# The account native payloads of a root worker run as (the worker creates it if missing).
getent passwd xwvm-job >/dev/null 2>&1 || $SUDO useradd --system --user-group \
    --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin xwvm-job || true
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
