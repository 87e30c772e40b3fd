#!/bin/sh
# Packer's shutdown_command (as root, through sudo one last time): remove the build
# user's way in and sudo itself, then power off. The image then has no sudo, no
# password login and no build account that could log in.
set -u
build_user=${1:-packer}
passwd --lock "$build_user" 2>/dev/null
usermod --expiredate 1 "$build_user" 2>/dev/null
rm -rf "/home/$build_user/.ssh" /etc/sudoers.d/*
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq sudo
test ! -e /usr/bin/sudo
sync
/sbin/shutdown -P now
