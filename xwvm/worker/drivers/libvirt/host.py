"""The libvirt connection, and the one place where libvirt errors become xwvm errors."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import libvirt

from xwvm.worker.drivers.errors import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    VMExists,
    VMNotFound,
)

# libvirt prints every error to stderr unless a handler is registered; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_UNAVAILABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN,
                libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_NO_SUPPORT}
_BAD_SPEC = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
             libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST}
_MISSING = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA}


def translate_error(e: libvirt.libvirtError, action: str) -> DriverError:
    code = e.get_error_code()
    message = f"{action}: {e.get_error_message() or e}"
    if code in _MISSING:
        return VMNotFound(message)
    if code in _EXISTS:
        return VMExists(message)
    if code in _BAD_SPEC:
        return SpecError(message)
    if code in _UNAVAILABLE or e.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorUnavailable(message)
    return DriverError(message, details={"libvirt_code": code})


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a block of libvirt calls; any libvirtError leaves it as an xwvm DriverError."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate_error(e, action) from e


class Host:
    """One libvirt connection (``qemu:///system`` by default), opened lazily, reopened
    after libvirtd restarts. All of the driver's libvirt calls go through here."""

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            with translated(f"cannot connect to libvirt at {self.uri}"):
                self._conn = libvirt.open(self.uri)
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def version(self) -> str:
        with translated("libvirt version"):
            c = self.conn()
            lib, hyp, kind = c.getLibVersion(), c.getVersion(), c.getType()
        return f"libvirt {_v(lib)}, {kind} {_v(hyp)}"

    def domain_types(self, arch: str = "x86_64") -> set[str]:
        """The domain types libvirt offers for ``arch`` ("qemu" = TCG, "kvm" when /dev/kvm
        is usable by the QEMU user)."""
        with translated("libvirt capabilities"):
            caps = ET.fromstring(self.conn().getCapabilities())
        types: set[str] = set()
        for guest in caps.iterfind("guest"):
            a = guest.find("arch")
            if a is not None and a.get("name") == arch:
                types.update(d.get("type", "") for d in a.iterfind("domain"))
        return types

    def lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate_error(e, f"look up domain {name}") from e

    def define(self, xml: str) -> libvirt.virDomain:
        with translated("define domain"):
            return self.conn().defineXML(xml)

    def create_transient(self, xml: str) -> libvirt.virDomain:
        with translated("create domain"):
            return self.conn().createXML(xml, 0)

    def domains(self, prefix: str) -> list[libvirt.virDomain]:
        with translated("list domains"):
            return [d for d in self.conn().listAllDomains(0) if d.name().startswith(prefix)]


def _v(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"
