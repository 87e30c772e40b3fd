#!/usr/bin/env bash
# Installs the Debian packages xwvm needs (idempotent). Runs as root, or via sudo.
set -euo pipefail
PKGS=(postgresql socat cloud-init mmdebstrap e2fsprogs qemu-utils qemu-system-x86 packer)
[ -n "${XWVM_EXTRA_PKGS:-}" ] && read -r -a extra <<<"$XWVM_EXTRA_PKGS" && PKGS+=("${extra[@]}")
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
