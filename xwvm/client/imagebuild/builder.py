"""Owns one template build: spec -> Debian root folder -> ext4 -> qcow2/VDI + kernel + manifest.

Offline except for Debian's and PyPI's package registries, no VM and no
mounts of our own: mmdebstrap builds the root folder (our hooks run inside
it), ``mke2fs -d`` turns it into a filesystem image, ``qemu-img`` converts
that. Each step prints a progress line and its time. With a cache folder,
downloaded .debs and wheels are kept for the next build.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from xwvm.client.imagebuild import image, initramfs, sources
from xwvm.client.imagebuild.hooks import DPKG_EXCLUDES, DPKG_INCLUDES, Plan
from xwvm.client.imagebuild.manifest import MANIFEST_NAME, Artifact, Manifest, describe
from xwvm.client.imagebuild.spec import ROOT_LABEL, TemplateSpec
from xwvm.errors import XwvmError

#: The image's Python and C library, for choosing binary wheels on the host.
WHEEL_TARGETS = {"bookworm": {"python": "3.11", "abi": "cp311", "glibc": (2, 36)}}
DEFAULT_EPOCH = 1_700_000_000
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KERNEL_FILE, INITRD_FILE, PACKAGES_FILE = "vmlinuz", "initrd.img", "packages.txt"


class BuildError(XwvmError):
    """A build step failed; the message names the step and carries the tool's output."""

    status, code = 500, "template_build_failed"


@dataclass
class BuildOptions:
    out_dir: Path
    keep_raw: bool = False
    cache_dir: Path | None = None
    apt_sources: list[Path] = field(default_factory=list)
    source_date_epoch: int | None = None
    progress: Callable[[str], None] = print


def build(spec: TemplateSpec, opts: BuildOptions) -> Manifest:
    """Build ``spec`` into ``opts.out_dir``; the manifest is written last, so a folder
    with a manifest holds a complete build."""
    Builder(spec, opts).run()
    return Manifest.load(opts.out_dir)


class Builder:
    def __init__(self, spec: TemplateSpec, opts: BuildOptions) -> None:
        self.spec, self.opts = spec, opts
        self.out = opts.out_dir
        self.work = self.out / ".work"
        self.rootfs = self.work / "rootfs"
        self.raw = self.out / "disk.raw"
        self.epoch = opts.source_date_epoch or source_date_epoch()
        self.steps: dict[str, float] = {}
        self.say = opts.progress

    def run(self) -> None:
        started, t0 = datetime.now(UTC), time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()
        plan = Plan(self.spec.path.resolve(), self.work, self.epoch)
        plan.save(self.work / "plan.json")
        self.say(f"building template {self.spec.name} {self.spec.version} "
                 f"(spec sha256 {self.spec.sha256[:12]}) into {self.out}")
        try:
            if self.spec.pip_packages:
                with self.step("pip", f"binary wheels {' '.join(self.spec.pip_packages)}"):
                    self.pip_install(plan)
            with self.step("rootfs", f"mmdebstrap {self.spec.release} "
                                     f"{self.spec.variant} + {len(self.spec.all_packages)} "
                                     "packages"):
                self.mmdebstrap(plan)
            with self.step("kernel", f"copy the kernel out of the image, initramfs: "
                                     f"{self.spec.initramfs}"):
                artifacts = self.copy_boot_files()
            with self.step("ext4", f"mke2fs -d, {self.spec.size_mb} MiB, label {ROOT_LABEL}"):
                image.make_ext4(self.rootfs, self.raw, self.spec.size_mb, self.spec.sha256,
                                self.epoch)
            facts = _read_facts(plan, self.rootfs)
            shutil.rmtree(self.work)
            for fmt in self.spec.formats:
                with self.step(f"convert-{fmt}", f"qemu-img convert raw -> {fmt}"):
                    disk = self.out / f"disk.{fmt}"
                    image.convert(self.raw, disk, fmt)
                    artifacts.append(self.disk_artifact(disk, fmt))
            with self.step("digest", "sha256 of the artifacts"):
                if self.opts.keep_raw:
                    artifacts.append(self.disk_artifact(self.raw, "raw"))
                else:
                    self.raw.unlink()
                (self.out / PACKAGES_FILE).write_text(facts["packages_text"])
                artifacts.append(describe(self.out / PACKAGES_FILE, "packages", "text"))
        except BaseException:
            if not os.environ.get("XWVM_BUILD_KEEP_WORK"):
                shutil.rmtree(self.work, ignore_errors=True)
            raise
        seconds = round(time.monotonic() - t0, 1)
        manifest = self.manifest(artifacts, facts, started, seconds)
        manifest.write(self.out)
        self.say(f"built {self.spec.name} {self.spec.version} in {seconds} s: "
                 + ", ".join(f"{a.file} {a.size / 2**20:.0f} MiB" for a in artifacts
                             if a.role == "disk"))

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        self.say(f"[{name}] {what} ...")
        t0 = time.monotonic()
        try:
            yield
        except (image.ImageError, subprocess.SubprocessError, OSError) as exc:
            raise BuildError(f"step {name} failed: {exc}") from exc
        self.steps[name] = round(time.monotonic() - t0, 1)
        self.say(f"[{name}] done in {self.steps[name]} s")

    def pip_install(self, plan: Plan) -> None:
        """The spec's pip packages as binary wheels for the image's Python, on the host
        (its pip configuration and index), into a folder the customize hook copies in."""
        target = WHEEL_TARGETS[self.spec.release]
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
               "--disable-pip-version-check", "--target", str(plan.pylib),
               "--python-version", target["python"], "--implementation", "cp",
               "--abi", target["abi"], *_platform_options(target["glibc"]),
               "--only-binary=:all:", *self.spec.pip_packages]
        env = dict(os.environ)
        if self.opts.cache_dir:
            env["PIP_CACHE_DIR"] = str(self.opts.cache_dir / "pip")
        self.stream(cmd, env)

    def mmdebstrap(self, plan: Plan) -> None:
        cmd = mmdebstrap_command(self.spec, self.rootfs, self.work / "plan.json",
                                 self.opts.cache_dir, self.opts.apt_sources or apt_sources())
        # System tools first: mmdebstrap runs `python3` per package, and a user's
        # python3 shim (pyenv) costs seconds over a build.
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(self.epoch), "PATH": SYSTEM_PATH,
               "PYTHONPATH": os.pathsep.join(filter(None, [*_import_roots(),
                                                           os.environ.get("PYTHONPATH")]))}
        self.stream(cmd, env)

    def stream(self, cmd: list[str], env: dict[str, str]) -> None:
        """Run ``cmd``, passing its output lines on as progress; fail with its last lines."""
        tail: list[str] = []
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env)
        except FileNotFoundError as exc:
            raise BuildError(f"{cmd[0]} is not installed (scripts/install-system.sh installs "
                             "it)") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-30:], line]
            if line.startswith(("I: ", "  check ", "E: ", "W: ", "xwvm build hook")):
                self.say(f"  {line}")
        if proc.wait() != 0:
            raise BuildError(f"{Path(cmd[0]).name} failed ({proc.returncode}):\n"
                             + "\n".join(tail))

    def copy_boot_files(self) -> list[Artifact]:
        boot = self.rootfs / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        initrds = sorted(boot.glob("initrd.img-*"))
        if len(kernels) != 1 or len(initrds) != 1:
            raise BuildError(f"expected one kernel and one initrd in /boot, found "
                             f"{[p.name for p in kernels + initrds]}")
        out = []
        for src, name, role, fmt in ((kernels[0], KERNEL_FILE, "kernel", "linux-kernel"),
                                     (initrds[0], INITRD_FILE, "initrd", "initramfs")):
            if role == "initrd" and self.spec.initramfs == "xwvm":
                version = kernels[0].name.removeprefix("vmlinuz-")
                try:
                    loaded = initramfs.build(self.rootfs, version, self.spec.initramfs_modules,
                                             self.out / name, self.epoch)
                except initramfs.InitramfsError as e:
                    raise BuildError(f"initramfs: {e}") from e
                self.say(f"  initramfs: busybox, /init, {len(loaded)} modules "
                         f"({', '.join(m.removesuffix('.ko') for m in loaded)})")
            else:
                shutil.copyfile(src, self.out / name)
            (self.out / name).chmod(0o644)
            out.append(describe(self.out / name, role, fmt))
        return out

    def disk_artifact(self, path: Path, fmt: str) -> Artifact:
        info = image.info(path)
        if info["format"] != fmt:
            raise BuildError(f"{path.name}: qemu-img reads it as {info['format']}, not {fmt}")
        return describe(path, "disk", fmt, virtual_size=int(info["virtual-size"]))

    def manifest(self, artifacts: list[Artifact], facts: dict, started: datetime,
                 seconds: float) -> Manifest:
        spec = self.spec
        return Manifest(
            name=spec.name, version=spec.version, description=spec.description,
            spec_sha256=spec.sha256, spec=spec.document,
            os={"distribution": "debian", "release": spec.release, "arch": spec.arch,
                "debian_version": facts["debian_version"]},
            cmdline=spec.cmdline, root_label=ROOT_LABEL,
            shared_apps=list(spec.shared_apps), min_memory_mb=spec.min_memory_mb,
            min_cpus=spec.min_cpus, artifacts=artifacts,
            packages={"file": PACKAGES_FILE, "count": facts["package_count"],
                      "sha256": next(a.sha256 for a in artifacts if a.role == "packages")},
            versions={"python3": facts["python3"], "kernel": facts["kernel"]["release"],
                      "kernel_package": facts["kernel"]["package"],
                      "kernel_package_version": facts["kernel"]["version"],
                      "pip": facts["pip_versions"]},
            hardening={"user": facts["user"], "root_locked": True, "user_locked": True,
                       "ssh_password_auth": False, "root_login": False, "sudo": False,
                       "setuid_removed": facts["setuid_removed"]},
            checks=facts["checks"],
            build={"started_at": started.isoformat(timespec="seconds"), "seconds": seconds,
                   "steps": self.steps, "source_date_epoch": self.epoch,
                   "builder": "xwvm template build", "python": platform.python_version(),
                   "mmdebstrap": _tool_version(["mmdebstrap", "--version"]),
                   "mke2fs": _tool_version(["mke2fs", "-V"]),
                   "qemu_img": _tool_version(["qemu-img", "--version"])},
        )


def mmdebstrap_command(spec: TemplateSpec, rootfs: Path, plan_path: Path,
                       cache_dir: Path | None, sources: list[Path]) -> list[str]:
    """The mmdebstrap command line; the hooks call back into ``xwvm.client.imagebuild.hooks``."""
    hook = f"{shlex.quote(sys.executable)} -m xwvm.client.imagebuild.hooks {{}} " \
           f"{shlex.quote(str(plan_path))} \"$1\""
    cmd = ["mmdebstrap", f"--variant={spec.variant}", "--mode=root", "--format=directory",
           "--architectures=amd64", "--aptopt=Apt::Install-Recommends \"false\"",
           *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
           *(f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES),
           f"--include={','.join(spec.all_packages)}",
           f"--essential-hook={hook.format('essential')}",
           f"--customize-hook={hook.format('customize')}"]
    if cache_dir:
        debs = cache_dir / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        cmd[1:1] = ["--skip=essential/unlink",
                    "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
                    f"--setup-hook=sync-in {shlex.quote(str(debs))} /var/cache/apt/archives"]
        cmd.append(f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(debs))}")
    return [*cmd, spec.release, str(rootfs), *map(str, sources)]


def apt_sources(release: str = "bookworm") -> list[Path]:
    """This machine's own Debian apt sources files (one-line or deb822) for ``release``."""
    etc = Path("/etc/apt")
    candidates = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
                  *sorted((etc / "sources.list.d").glob("*.sources"))]
    found = [p for p in candidates
             if p.is_file() and release in (text := p.read_text()) and "debian" in text]
    if not found:
        raise BuildError(f"no apt sources for Debian {release} in {etc}; pass --apt-sources")
    return found


def source_date_epoch() -> int:
    """``$SOURCE_DATE_EPOCH``, else the last commit time of the checkout xwvm is imported
    from (if it is one), else a constant."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    try:
        checkout = sources.import_root("xwvm")
        out = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        return int(out.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return DEFAULT_EPOCH


def _import_roots() -> list[str]:
    """Where the hooks' packages are imported from (the hooks run in a new interpreter)."""
    return list(dict.fromkeys(str(sources.import_root(p))
                              for p in ("xwvm", "appliance", "contextualizer")))


def _platform_options(glibc: tuple[int, int]) -> list[str]:
    """Every manylinux tag the image's C library can run: pip does not infer older ones."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 16, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return [option for tag in tags for option in ("--platform", tag)]


def _read_facts(plan: Plan, rootfs: Path) -> dict:
    facts = json.loads(plan.facts.read_text())
    lines = sorted(line for line in facts["packages"].splitlines() if line)
    facts["packages_text"] = "".join(f"{line}\n" for line in lines)
    facts["package_count"] = len(lines)
    facts["debian_version"] = (rootfs / "etc/debian_version").read_text().strip()
    pip_versions = {}
    if plan.pylib.is_dir():
        for dist in sorted(plan.pylib.glob("*.dist-info")):
            name, _, version = dist.name.removesuffix(".dist-info").partition("-")
            pip_versions[name] = version
    facts["pip_versions"] = pip_versions
    return facts


def _tool_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "unknown"
