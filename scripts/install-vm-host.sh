#!/usr/bin/env bash
# Installs and starts what a libvirt/QEMU VM host needs (idempotent). Runs as root, or via sudo.
#
# Works without systemd (CI, containers): the daemons are started with -d when
# `virsh -c qemu:///system version` does not answer. No kernel is installed on
# the host; test guests fetch theirs with `apt-get download` (tests/support/guest.py).
set -euo pipefail

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

PKGS=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
      libvirt-clients libvirt-dev pkg-config socat busybox-static cpio
      libxml2-utils)  # xmllint, for virt-xml-validate in the tests
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-vm-host: installing ${missing[*]}"
    $SUDO apt-get update -qq
    # policy-rc.d 101: no service starts from maintainer scripts (there may be no init system).
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The /dev/kvm gotcha (docs/vm-execution.md): when /dev/kvm exists but the unprivileged
# QEMU user (libvirt-qemu) cannot open it, libvirt re-probes QEMU's capabilities on every
# domain start and createXML takes ~48 s instead of ~0.7 s. We give the device to the kvm
# group (as udev's rule does on a normal host) rather than running QEMU as root: a guest
# that escapes QEMU must not land as root on a volunteer's machine.
if [ -e /dev/kvm ]; then
    getent group kvm >/dev/null || $SUDO groupadd --system kvm
    id -nG libvirt-qemu 2>/dev/null | grep -qw kvm || $SUDO usermod -aG kvm libvirt-qemu
    if [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
        $SUDO chgrp kvm /dev/kvm
        $SUDO chmod 660 /dev/kvm
        restart_libvirtd=1
    fi
fi

running() { pgrep -x "$1" >/dev/null 2>&1; }
running virtlogd || $SUDO virtlogd -d
if [ "${restart_libvirtd:-0}" = 1 ] && running libvirtd; then
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl restart libvirtd
    else
        # libvirtd reads qemu.conf, and caches the QEMU capabilities it probed while
        # /dev/kvm was closed to its user, at start: restart it (running VMs are kept).
        pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
        if [ -n "$pid" ]; then
            $SUDO kill -TERM "$pid" || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        $SUDO rm -f /var/cache/libvirt/qemu/capabilities/*.xml
    fi
fi
if ! $SUDO virsh -c qemu:///system version >/dev/null 2>&1; then
    running libvirtd || $SUDO libvirtd -d
    for _ in $(seq 100); do
        $SUDO virsh -c qemu:///system version >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
$SUDO virsh -c qemu:///system version >/dev/null || {
    echo "install-vm-host: libvirtd does not answer on qemu:///system" >&2
    exit 1
}
