"""The FAKE's client-side proxies of VBoxSVC's objects, and so its service restarts.

What a vboxapi client holds is not VBoxSVC's object but an XPCOM (or COM) proxy of it. When
VBoxSVC goes away, every proxy a client got from it is dead: any use fails with a result
code that vboxapi's ``xcptIsDeadInterface`` recognises (under XPCOM: NS_ERROR_ABORT or
NS_ERROR_CALL_FAILED; the fake raises NS_ERROR_CALL_FAILED, what XPCOM's IPC gives when the
server is gone). A client recovers only with new objects from a new ``getVirtualBox()``.
The fake's manager hands out :class:`Remote` proxies, stamped with the service's epoch;
``FakeService.restart`` starts a new epoch.

Attributes whose names start with "_" are the fake's own (the tests' white-box access):
they pass through unchecked and unwrapped. The real API has none.
"""

from __future__ import annotations

from typing import Any

_API_MODULE = "tests.support.fake_vboxapi.api"


class Remote:
    """A client's proxy of one object in the fake VBoxSVC."""

    __slots__ = ("_epoch", "_svc", "_target")

    def __init__(self, target: Any, svc: Any) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_svc", svc)
        object.__setattr__(self, "_epoch", svc.epoch)

    def _alive(self, key: str) -> None:
        """Raise as a dead interface does if VBoxSVC restarted since this proxy was got
        (or restarts now: FakeService.restart_on)."""
        self._svc.hook(key)
        if self._epoch != self._svc.epoch:
            raise self._svc.dead(f"{type(self._target).__name__}.{key}")

    def __getattr__(self, key: str) -> Any:
        target = self._target
        if key.startswith("_"):
            return getattr(target, key)
        self._alive(key)
        value = getattr(target, key)
        if not callable(value):
            return wrap(value, self._svc)

        def call(*args: Any, **kw: Any) -> Any:
            self._alive(key)
            return wrap(value(*unwrap(args), **{k: unwrap(v) for k, v in kw.items()}),
                        self._svc)
        return call

    def __setattr__(self, key: str, value: Any) -> None:
        self._alive(key)
        setattr(self._target, key, unwrap(value))

    def __eq__(self, other: object) -> bool:
        return bool(self._target == unwrap(other))

    def __hash__(self) -> int:
        return hash(self._target)

    def __repr__(self) -> str:
        return f"<fake proxy of {self._target!r} (epoch {self._epoch})>"


def wrap(value: Any, svc: Any) -> Any:
    """``value`` as a client receives it: the fake's objects as proxies."""
    if isinstance(value, list | tuple):
        return [wrap(v, svc) for v in value]
    if type(value).__module__ == _API_MODULE:
        return Remote(value, svc)
    return value


def unwrap(value: Any) -> Any:
    """An argument as VBoxSVC receives it: proxies back to the objects (a dead proxy
    fails, as passing a dead interface does)."""
    if isinstance(value, Remote):
        value._alive("(argument)")
        return value._target
    if isinstance(value, list | tuple):
        return type(value)(unwrap(v) for v in value)
    return value
