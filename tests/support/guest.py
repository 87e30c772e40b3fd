"""The tiny test guest: a Debian cloud kernel plus a busybox initramfs that runs a test's script.

The kernel comes from Debian's own package (``apt-get download``, cached in
``/var/cache/xwvm-test`` between runs; nothing is installed on the host). The
initramfs holds a static busybox, the kernel modules the guest needs (the cloud
kernel builds virtio, virtio-scsi, sr_mod and iso9660 as modules), an ``/init``
that loads them and then runs the script a test injects, and powers the guest
off. Everything the script prints reaches the serial console, which the driver
logs to a file: tests assert on markers in that log.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XWVM_TEST_CACHE", "/var/cache/xwvm-test"))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static

# What the guest loads, leaves first; dependencies are added from each module's .modinfo.
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "sr_mod", "isofs")

# The guest's network setup for QEMU user networking (SLIRP's fixed addresses).
NET_UP = """\
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
"""

# A static glibc busybox resolves even IP literals through NSS: without these files wget crashes.
ETC = {
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "hosts": "127.0.0.1 localhost\n",
    "passwd": "root:x:0:0:root:/:/bin/sh\n",
    "group": "root:x:0:\n",
}

INIT = """\
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules.load); do insmod /lib/modules/$m.ko; done
echo "XWVM-GUEST: up $(cut -d' ' -f1 /proc/uptime)"
sh /test.sh
echo "XWVM-GUEST: done rc=$? $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules: Path  # the extracted /lib/modules/<version>/kernel


@dataclass(frozen=True)
class Guest:
    """What a VMSpec needs for direct kernel boot of the test guest."""

    kernel: Path
    initrd: Path
    cmdline: str = "console=ttyS0 quiet panic=-1"


def _kernel_package() -> str:
    out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+-cloud-amd64)$", line)
        if m:
            return m.group(1)
    raise RuntimeError(f"no linux-image-*-cloud-amd64 in apt-cache:\n{out}")


def fetch_kernel(cache: Path = CACHE) -> Kernel:
    """Download (once) and unpack Debian's cloud kernel into ``cache``; never installs it."""
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, 0o755)  # QEMU runs as libvirt-qemu and reads the kernel from here
    unpacked = sorted(cache.glob("linux-image-*-cloud-amd64"))
    if not unpacked:
        pkg = _kernel_package()
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=tmp, check=True,
                           capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            dest = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
            os.rename(dest, cache / pkg)
        unpacked = [cache / pkg]
    root = unpacked[-1]
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    version = vmlinuz.name.removeprefix("vmlinuz-")
    os.chmod(root, 0o755)
    return Kernel(version, vmlinuz, root / "lib" / "modules" / version / "kernel")


def _depends(ko: Path) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section (no modinfo/depmod needed)."""
    m = re.search(rb"\x00depends=([^\x00]*)\x00", ko.read_bytes())
    return [d for d in (m.group(1).decode().split(",") if m else []) if d]


def module_load_order(kernel: Kernel, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    """The .ko files for ``wanted`` and their dependencies, each after what it depends on."""
    index = {p.name.removesuffix(".ko").replace("-", "_"): p for p in kernel.modules.rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str) -> None:
        path = index[name.replace("-", "_")]
        if path in order:
            return
        for dep in _depends(path):
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _cpio(root: Path, dest: Path) -> None:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    proc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root,
                          input="\n".join(names).encode(), capture_output=True, check=True)
    with gzip.open(dest, "wb", compresslevel=1) as f:
        f.write(proc.stdout)


def build_guest(script: str, dest_dir: Path, *, kernel: Kernel | None = None,
                name: str = "guest") -> Guest:
    """An initramfs whose /init loads the modules, runs ``script`` (busybox sh), powers off.

    ``NET_UP`` is a ready-made prefix for scripts that use the network.
    """
    kernel = kernel or fetch_kernel()
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ("bin", "etc", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        modules = module_load_order(kernel)
        for ko in modules:
            shutil.copy2(ko, root / "lib" / "modules" / ko.name)
        (root / "etc" / "modules.load").write_text(
            "\n".join(ko.name.removesuffix(".ko") for ko in modules) + "\n")
        for name_, text in ETC.items():
            (root / "etc" / name_).write_text(text)
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        (root / "test.sh").write_text(script)
        initrd = dest_dir / f"{name}.initrd.gz"
        _cpio(root, initrd)
    os.chmod(initrd, 0o644)
    return Guest(kernel=kernel.vmlinuz, initrd=initrd)
