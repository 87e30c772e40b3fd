"""Owns what happens inside the image while mmdebstrap builds it (essential, customize hooks).

mmdebstrap runs ``python -m xwvm.client.imagebuild.hooks STAGE PLAN ROOTFS`` with
``/proc``, ``/sys`` and ``/dev`` mounted in ROOTFS, so chroot commands behave
as in a booted system. ``essential`` runs before the kernel is installed (the
initramfs is generated once, with our configuration); ``customize`` installs
the appliance, applies the guest hardening, runs the spec's self-checks and
writes what it learnt about the image to ``facts.json`` in the work folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contextualizer.model import DEFAULT_AGENT_COMMAND
from xwvm.client.imagebuild import sources
from xwvm.client.imagebuild.spec import TemplateSpec, load_spec
from xwvm.protocol.hardening import FORBIDDEN_PROGRAMS

LIB_DIR = "/opt/xwvm/lib"
#: The agent wrapper, where the context's agent command (and the init) runs it.
AGENT = DEFAULT_AGENT_COMMAND[0]
INIT = "/opt/xwvm/init"
ENV_FILE = "/opt/xwvm/env"
HOSTNAME = "xwvm"
SSHD_DROP_IN = "etc/ssh/sshd_config.d"
#: Kept out of the image to keep it small; the copyright files stay (licences).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/linda/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
CHECK_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


class HookError(RuntimeError):
    """A step inside the image failed; mmdebstrap then fails the build with this message."""


@dataclass(frozen=True)
class Plan:
    """What the builder hands the hooks: the spec and a work folder outside the image."""

    spec_path: Path
    work: Path
    source_date_epoch: int

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"spec": str(self.spec_path), "work": str(self.work),
                                    "source_date_epoch": self.source_date_epoch}))

    @classmethod
    def load(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text())
        return cls(Path(raw["spec"]), Path(raw["work"]), int(raw["source_date_epoch"]))

    @property
    def pylib(self) -> Path:
        """Where the builder put the spec's pip packages before the image was made."""
        return self.work / "pylib"

    @property
    def facts(self) -> Path:
        return self.work / "facts.json"


def essential(spec: TemplateSpec, root: Path) -> None:
    """Before the remaining packages: files the package scripts must already see."""
    for copy in spec.files:
        _copy_tree(copy.source, root / copy.dest.lstrip("/"))
    if spec.initramfs_modules:
        # No udev in the image, so nothing loads the disk driver on demand: list it
        # and keep the initramfs small (it is unpacked on every boot).
        modules = root / "usr/share/initramfs-tools/modules.d/xwvm"
        modules.parent.mkdir(parents=True, exist_ok=True)
        modules.write_text("".join(f"{m}\n" for m in spec.initramfs_modules))
        conf = root / "etc/initramfs-tools/conf.d/xwvm.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("# written by xwvm template build\nMODULES=list\n")
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")


def customize(spec: TemplateSpec, plan: Plan, root: Path) -> None:
    """After all packages: the appliance, hardening, self-checks, facts for the manifest."""
    install_appliance(spec, plan, root)
    removed_setuid = harden(spec, root)
    tidy(root)
    facts: dict[str, Any] = {
        "packages": _chroot_out(root, "dpkg-query", "-W",
                                "-f=${Package}\t${Version}\t${Architecture}\n"),
        "python3": _chroot_out(root, "python3", "-c",
                               "import platform; print(platform.python_version())").strip(),
        "kernel": _kernel_facts(root, spec.kernel_package),
        "setuid_removed": removed_setuid,
        "user": spec.user,
    }
    facts["checks"] = run_checks(spec, root)
    plan.facts.write_text(json.dumps(facts, indent=2))
    failed = [c["name"] for c in facts["checks"] if not c["ok"]]
    if failed:
        raise HookError(f"self-check(s) failed inside the image: {', '.join(failed)} "
                        f"(see {plan.facts})")


def install_appliance(spec: TemplateSpec, plan: Plan, root: Path) -> None:
    """The guest's Python packages, the init, the agent wrapper and the pip packages."""
    lib = root / LIB_DIR.lstrip("/")
    for source, name in sources.guest_files(spec.python_packages):
        _install_file(source, lib / name, stat.S_IMODE(source.stat().st_mode))
    _install_file(sources.appliance_file("init"), root / INIT.lstrip("/"), 0o755)
    pythonpath = ":".join([LIB_DIR, *([spec.pip_target] if spec.pip_target else [])])
    path = f"{spec.pip_target}/bin:{CHECK_PATH}" if spec.pip_target else CHECK_PATH
    env = root / ENV_FILE.lstrip("/")
    env.write_text(f"# The appliance's environment, for the agent and its payloads.\n"
                   f"PYTHONPATH={pythonpath}\nPATH={path}\n")
    env.chmod(0o644)
    agent = root / AGENT.lstrip("/")
    agent.parent.mkdir(parents=True, exist_ok=True)
    agent.write_text("#!/bin/sh\n"
                     "# The xwvm nested-worker agent (appliance/), run by /opt/xwvm/init.\n"
                     f"set -a\n. {ENV_FILE}\nset +a\n"
                     "exec python3 -m appliance.agent \"$@\"\n")
    agent.chmod(0o755)
    if spec.pip_target:
        target = root / spec.pip_target.lstrip("/")
        _copy_tree(plan.pylib, target)
        _fix_shebangs(target / "bin")
    if spec.python_packages:
        _chroot(root, "python3", "-m", "compileall", "-q", "-j", "0", LIB_DIR,
                env={"SOURCE_DATE_EPOCH": str(plan.source_date_epoch)})


def harden(spec: TemplateSpec, root: Path) -> list[str]:
    """The security model's guest hardening; returns the files whose setuid bit was dropped."""
    if not _user_exists(root, spec.user):
        _chroot(root, "useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                spec.user)
    _chroot(root, "passwd", "--lock", spec.user)
    _chroot(root, "passwd", "--lock", "root")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every VM generates its own at boot
    drop_ins = sorted((root / SSHD_DROP_IN).glob("*.conf"))
    if not any("PasswordAuthentication no" in p.read_text() for p in drop_ins):
        raise HookError(f"no /{SSHD_DROP_IN}/*.conf turns PasswordAuthentication off "
                        "(appliance/rootfs must provide it)")
    for prog in FORBIDDEN_PROGRAMS:
        if (root / prog).exists():
            raise HookError(f"/{prog} is in the image; no sudo in a guest")
    shutil.rmtree(root / "etc/sudoers.d", ignore_errors=True)
    keep = {"usr/bin/su"} if spec.allow_su else set()
    return _drop_setuid(root, keep)


def tidy(root: Path) -> None:
    """What a booted appliance never needs and what differs from build to build."""
    for pattern in ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/log/apt/*",
                    "var/log/*.log", "var/cache/ldconfig/aux-cache", "root/.cache",
                    "var/lib/apt/lists/*_*"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# written at boot by /opt/xwvm/init\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n"
                                    f"127.0.1.1 {HOSTNAME}\n")
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")


def run_checks(spec: TemplateSpec, root: Path) -> list[dict[str, Any]]:
    """Each of the spec's checks, run in the image as the unprivileged user."""
    env_lines = (root / ENV_FILE.lstrip("/")).read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if "=" in line and line[0] != "#")
    env.update(HOME=f"/home/{spec.user}", LANG="C.UTF-8")
    results = []
    for check in spec.checks:
        cmd = ["chroot", f"--userspec={spec.user}:{spec.user}", str(root),
               "env", "-i", *(f"{k}={v}" for k, v in sorted(env.items())), *check.command]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              cwd="/", check=False)
        output, errors = proc.stdout.strip(), proc.stderr.strip()
        results.append({"name": check.name, "command": list(check.command),
                        "ok": proc.returncode == 0, "exit_status": proc.returncode,
                        "output": output[-2000:], "stderr": errors[-2000:]})
        last = (output or errors).splitlines()[-1:] or [""]
        print(f"  check {check.name}: {'ok' if proc.returncode == 0 else 'FAILED'}: {last[0]}",
              flush=True)
    return results


def _kernel_facts(root: Path, package: str) -> dict[str, str]:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise HookError(f"expected one kernel in /boot, found {kernels or 'none'}")
    release = kernels[0]
    version = _chroot_out(root, "dpkg-query", "-W", "-f=${Version}", f"linux-image-{release}")
    meta = _chroot_out(root, "dpkg-query", "-W", "-f=${Version}", package)
    return {"release": release, "package": f"linux-image-{release}", "version": version,
            "meta_package": package, "meta_version": meta}


def _user_exists(root: Path, user: str) -> bool:
    return any(line.split(":", 1)[0] == user
               for line in (root / "etc/passwd").read_text().splitlines())


def _drop_setuid(root: Path, keep: set[str]) -> list[str]:
    """Nothing the unprivileged user runs may gain privileges (PAM, mount, passwd, ...)."""
    dropped = []
    for top in ("usr", "bin", "sbin", "opt"):
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                path = Path(dirpath, name)
                mode = path.lstat().st_mode
                rel = str(path.relative_to(root))
                if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID) and rel not in keep:
                    path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                    dropped.append(f"/{rel}")
    return sorted(dropped)


def _fix_shebangs(bin_dir: Path) -> None:
    """pip ran on the build host, so its console scripts name the host's interpreter:
    point them at the image's python3."""
    if not bin_dir.is_dir():
        return
    for script in bin_dir.iterdir():
        if not script.is_file() or script.is_symlink():
            continue
        head = script.read_bytes()[:256]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            body = script.read_bytes().split(b"\n", 1)
            script.write_bytes(b"#!/usr/bin/python3\n" + (body[1] if len(body) > 1 else b""))


def _copy_tree(src: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".gitkeep", ".git")
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True, ignore=ignore)
    else:
        _install_file(src, dest, stat.S_IMODE(src.stat().st_mode))


def _install_file(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _chroot(root: Path, *cmd: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise HookError(f"{' '.join(cmd)} failed in the image: {proc.stderr.strip()}")


def _chroot_out(root: Path, *cmd: str) -> str:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise HookError(f"{' '.join(cmd)} failed in the image: {proc.stderr.strip()}")
    return proc.stdout


def main(argv: list[str]) -> int:
    stage, plan_path, root = argv[1], Path(argv[2]), Path(argv[3])
    plan = Plan.load(plan_path)
    spec = load_spec(plan.spec_path)
    try:
        if stage == "essential":
            essential(spec, root)
        elif stage == "customize":
            customize(spec, plan, root)
        else:
            raise HookError(f"unknown hook stage {stage!r}")
    except (HookError, sources.SourceError) as exc:
        print(f"xwvm build hook {stage}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
