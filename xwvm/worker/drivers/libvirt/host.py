"""The libvirt connection, and the one place where libvirt errors become xwvm errors.

Every libvirt call of the driver runs through :meth:`Host.run`: when libvirtd restarts
under a call (the connection breaks: "Cannot write data: Broken pipe", "End of file while
reading data", "client socket is closed"), the Host drops the connection, reopens it,
waiting while libvirtd is absent, and runs the call again, for at most ``reconnect_s``
(see :mod:`xwvm.worker.drivers.reconnect`). QEMU domains keep running meanwhile, and the
restarted libvirtd re-attaches to them; a :class:`~xwvm.worker.drivers.libvirt.guest.Guest`
finds its domain again by name and UUID. Defining or creating a domain is not repeated
blindly: after a reconnect, a domain of that name carrying the same owner tag is the lost
attempt's, and is taken as the result.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar
from urllib.parse import urlsplit

import libvirt

from xwvm.worker.drivers.errors import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    VMExists,
    VMNotFound,
)
from xwvm.worker.drivers.libvirt.config import XWVM_NS, OwnerTag
from xwvm.worker.drivers.reconnect import Outage, log, reconnect_window

T = TypeVar("T")

# libvirt prints every error to stderr unless a handler is registered; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_UNAVAILABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN,
                libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_NO_SUPPORT}
_BAD_SPEC = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
             libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST}
_MISSING = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA}
# A connection that broke or never opened: a reconnect may heal it. Credentials refused
# or a call the driver does not support will not, and are not retried.
_LOST = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
_NOT_LOST = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED,
             libvirt.VIR_ERR_NO_SUPPORT}
_LOST_WORDING = ("client socket is closed", "connection closed", "broken pipe",
                 "end of file while reading data", "cannot recv data", "cannot write data")


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


def connection_lost(e: libvirt.libvirtError) -> bool:
    """Whether ``e`` says the connection to libvirtd is gone (a restart, a crash)."""
    code = e.get_error_code()
    if code in _NOT_LOST:
        return False
    if code in _LOST or e.get_error_domain() == libvirt.VIR_FROM_RPC:
        return True
    text = str(e.get_error_message() or e).lower()
    return any(words in text for words in _LOST_WORDING)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a block of libvirt calls; any libvirtError leaves it as an xwvm DriverError."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate_error(e, action) from e


def _safe_uri(uri: str) -> str:
    """The URI as logs show it: no user info, no query (socket paths, key files)."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


class Host:
    """One libvirt connection (``qemu:///system`` by default), opened lazily and reopened
    after libvirtd restarts. All of the driver's libvirt calls go through :meth:`run`.

    ``reconnect_s``: how long a call waits out a lost connection (reconnect_window()).
    Before the first connection ever opened, a libvirtd that does not answer is reported
    at once (the probe of a host without libvirt must not wait)."""

    def __init__(self, uri: str = "qemu:///system", reconnect_s: float | None = None) -> None:
        self.uri = uri
        self.reconnect_s = reconnect_window(reconnect_s)
        self._conn: libvirt.virConnect | None = None
        self._opened = False  # a connection opened once: later failures are waited out
        self._lock = threading.Lock()

    @property
    def service(self) -> str:
        return f"libvirt at {_safe_uri(self.uri)}"

    def conn(self) -> libvirt.virConnect:
        """The open connection, opened now if need be (one attempt, translated)."""
        with translated(f"cannot connect to {self.service}"):
            return self._open()

    def run(self, action: str, call: Callable[[libvirt.virConnect], T]) -> T:
        """``call(connection)`` with its libvirt errors translated. When the connection is
        lost (libvirtd restarts), reconnect and call again, for up to ``reconnect_s``;
        ``call`` must therefore be safe to repeat."""
        outage: Outage | None = None
        while True:
            conn = None
            try:
                conn = self._open()
                if outage is not None:
                    outage.recovered()
                return call(conn)
            except libvirt.libvirtError as e:
                if not connection_lost(e) or not self._opened:
                    raise translate_error(e, action) from e
                self._drop(conn)
                reason = str(e.get_error_message() or e)
                if outage is None:
                    outage = Outage(self.service, action, reason, self.reconnect_s)
                outage.pause(reason)

    def _open(self) -> libvirt.virConnect:
        with self._lock:
            conn = self._conn
            if conn is not None:
                with suppress(libvirt.libvirtError):
                    if conn.isAlive():
                        return conn
                log.warning("the connection to %s was closed; reopening it", self.service)
                self._forget()
            self._conn = libvirt.open(self.uri)
            self._opened = True
            return self._conn

    def _drop(self, conn: libvirt.virConnect | None) -> None:
        """Forget ``conn`` (unless another thread has already replaced it)."""
        with self._lock:
            if conn is not None and self._conn is conn:
                self._forget()

    def _forget(self) -> None:
        if self._conn is not None:
            with suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._forget()

    def version(self) -> str:
        lib, hyp, kind = self.run("libvirt version", lambda c: (
            c.getLibVersion(), c.getVersion(), c.getType()))
        return f"libvirt {_v(lib)}, {kind} {_v(hyp)}"

    def domain_types(self, arch: str = "x86_64") -> set[str]:
        """The domain types libvirt offers for ``arch`` ("qemu" = TCG, "kvm" when /dev/kvm
        is usable by the QEMU user)."""
        caps = ET.fromstring(self.run("libvirt capabilities", lambda c: c.getCapabilities()))
        types: set[str] = set()
        for guest in caps.iterfind("guest"):
            a = guest.find("arch")
            if a is not None and a.get("name") == arch:
                types.update(d.get("type", "") for d in a.iterfind("domain"))
        return types

    def lookup(self, name: str) -> libvirt.virDomain | None:
        return self.run(f"look up domain {name}", lambda c: _find(c, name))

    def define(self, xml: str) -> libvirt.virDomain:
        return self._make("define domain", xml, lambda c: c.defineXML(xml))

    def create_transient(self, xml: str) -> libvirt.virDomain:
        return self._make("create domain", xml, lambda c: c.createXML(xml, 0))

    def domains(self, prefix: str) -> list[libvirt.virDomain]:
        return self.run("list domains", lambda c: [
            d for d in c.listAllDomains(0) if d.name().startswith(prefix)])

    def _make(self, action: str, xml: str,
              make: Callable[[libvirt.virConnect], libvirt.virDomain]) -> libvirt.virDomain:
        """``make`` the domain of ``xml``, never twice: when a lost connection cut an
        attempt off, a domain of that name with the same owner tag is that attempt's."""
        root = ET.fromstring(xml)
        name = root.findtext("name") or ""
        el = root.find(f"metadata/{{{XWVM_NS}}}vm")
        tag = OwnerTag.from_element(el) if el is not None else None
        attempts = 0

        def attempt(conn: libvirt.virConnect) -> libvirt.virDomain:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and tag is not None:
                dom = _made(conn, name, tag)
                if dom is not None:
                    log.info("%s %s: the attempt cut off by the lost connection had made it; "
                             "not repeating it", action, name)
                    return dom
            return make(conn)

        return self.run(f"{action} {name}", attempt)


def _find(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _made(conn: libvirt.virConnect, name: str, tag: OwnerTag) -> libvirt.virDomain | None:
    """The domain ``name`` if it carries ``tag``; None if there is none, or another's."""
    dom = _find(conn, name)
    if dom is None:
        return None
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, XWVM_NS)
    except libvirt.libvirtError as e:
        if e.get_error_code() in _MISSING:
            return None
        raise
    return dom if OwnerTag.from_xml(xml) == tag else None


def _v(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"
