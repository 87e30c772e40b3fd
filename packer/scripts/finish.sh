#!/bin/sh
# Packer's shutdown_command (as root, through sudo one last time): remove the build
# user's way in and every privilege tool, sudo included, then power off. The image then
# has no sudo, no password login and no build account that could log in.
# XWVM_FORBIDDEN_PACKAGES is the protocol's one list (xwvm.protocol.hardening
# FORBIDDEN_PACKAGES), passed by the generated template (xwvm/client/imagebuild/packer.py).
set -u
build_user=${1:-packer}
forbidden=${XWVM_FORBIDDEN_PACKAGES:?the template passes the list to purge}
passwd --lock "$build_user" 2>/dev/null
usermod --expiredate 1 "$build_user" 2>/dev/null
rm -rf "/home/$build_user/.ssh" /etc/sudoers.d/*
# Only the installed ones: apt-get refuses the whole purge for a name it does not know.
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f '${Status} ${Package}\n' $forbidden 2>/dev/null |
    awk '$3 == "installed" { print $4 }')
if [ -n "$installed" ]; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $installed
fi
test ! -e /usr/bin/sudo
sync
/sbin/shutdown -P now
