"""Field tables for XML objects: each property bound to one place in its element, so that
building (object to XML) and parsing (XML to object) are one description, not two.

In the manner of virt-manager's ``virtinst/xmlbuilder.py``: a class lists its bindings in
document order (:class:`XMLObject.FIELDS`); :meth:`XMLObject.to_element` walks the list
and writes, :meth:`XMLObject.from_element` walks the same list and reads. Paths are
relative to the object's element, ``/``-separated, with ``prefix:tag`` steps for
namespaced elements (:data:`NAMESPACES`) and a final ``@name`` for an attribute:
``"type/@arch"``, ``"qemu:commandline/qemu:arg/@value"``, ``"@type"``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
XWVM_NS = "http://xwvm.org/xmlns/libvirt/domain/1.0"
NAMESPACES = {"qemu": QEMU_NS, "xwvm": XWVM_NS}
for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


def qname(step: str) -> str:
    """``prefix:tag`` in Clark notation (``{uri}tag``); a plain tag stays as it is."""
    prefix, _, tag = step.rpartition(":")
    return f"{{{NAMESPACES[prefix]}}}{tag}" if prefix else tag


def _split(path: str) -> tuple[list[str], str | None]:
    """(element steps, attribute or None) of a path."""
    steps = [s for s in path.split("/") if s]
    if steps and steps[-1].startswith("@"):
        return [qname(s) for s in steps[:-1]], steps[-1][1:]
    return [qname(s) for s in steps], None


def _descend(el: ET.Element, steps: Sequence[str]) -> ET.Element:
    """The element at ``steps`` below ``el``, made where missing (document order follows
    the order in which the bindings first name an element)."""
    for step in steps:
        child = el.find(step)
        el = child if child is not None else ET.SubElement(el, step)
    return el


def _find(el: ET.Element, steps: Sequence[str]) -> ET.Element | None:
    return el.find("/".join(steps)) if steps else el


@dataclass(frozen=True)
class Binding:
    """One property at one path. ``attr`` None: a constant every element carries."""

    attr: str | None
    path: str

    def build(self, el: ET.Element, obj: Any) -> None:
        raise NotImplementedError

    def parse(self, el: ET.Element) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Value(Binding):
    """A scalar as an element's text or an attribute (omitted when None)."""

    to_str: Callable[[Any], str] = str
    from_str: Callable[[str], Any] = str
    missing: Any = None
    read: Callable[[ET.Element], Any] | None = None  # parse from the element itself

    def build(self, el: ET.Element, obj: Any) -> None:
        value = getattr(obj, self.attr or "")
        if value is None:
            return
        steps, name = _split(self.path)
        target = _descend(el, steps)
        if name is None:
            target.text = self.to_str(value)
        else:
            target.set(name, self.to_str(value))

    def parse(self, el: ET.Element) -> Any:
        steps, name = _split(self.path)
        target = _find(el, steps)
        if target is None:
            return self.missing
        if self.read is not None:
            return self.read(target)
        raw = target.text if name is None else target.get(name)
        return self.missing if raw is None else self.from_str(raw)


@dataclass(frozen=True)
class Const(Binding):
    """A fixed text or attribute (or an empty element: ``value`` None), written always, or
    only when property ``when`` is set; never read back."""

    value: str | None = None
    when: str | None = None

    def build(self, el: ET.Element, obj: Any) -> None:
        if self.when is not None and getattr(obj, self.when) is None:
            return
        steps, name = _split(self.path)
        target = _descend(el, steps)
        if name is not None:
            target.set(name, self.value or "")
        elif self.value is not None:
            target.text = self.value


@dataclass(frozen=True)
class Flag(Binding):
    """A bool as the presence of an element (with ``attrs``); ``present`` is the value the
    element stands for."""

    attrs: dict[str, str] = field(default_factory=dict)
    present: bool = True

    def build(self, el: ET.Element, obj: Any) -> None:
        if bool(getattr(obj, self.attr or "")) == self.present:
            steps, _ = _split(self.path)
            _descend(el, steps[:-1]).append(ET.Element(steps[-1], self.attrs))

    def parse(self, el: ET.Element) -> bool:
        found = _find(el, _split(self.path)[0])
        matches = found is not None and all(found.get(k) == v for k, v in self.attrs.items())
        return matches == self.present


@dataclass(frozen=True)
class Values(Binding):
    """A list of strings, one element each, in an attribute: ``"parent/tag/@attr"``; the
    parent is written only for a non-empty list."""

    def build(self, el: ET.Element, obj: Any) -> None:
        values = getattr(obj, self.attr or "")
        if not values:
            return
        steps, name = _split(self.path)
        parent = _descend(el, steps[:-1])
        for value in values:
            ET.SubElement(parent, steps[-1], {name or "value": value})

    def parse(self, el: ET.Element) -> list[str]:
        steps, name = _split(self.path)
        return [e.get(name or "value", "") for e in el.iterfind("/".join(steps))]


@dataclass(frozen=True)
class Child(Binding):
    """A nested XMLObject under ``path`` (the object's own tag below it); a list of them
    when ``many``. ``default`` makes the value when the element is absent."""

    cls: type[XMLObject] | None = None
    many: bool = False
    default: Callable[[], Any] | None = None

    def build(self, el: ET.Element, obj: Any) -> None:
        value = getattr(obj, self.attr or "")
        if value is None:
            return
        parent = _descend(el, _split(self.path)[0])
        for item in value if self.many else [value]:
            parent.append(item.to_element())

    def parse(self, el: ET.Element) -> Any:
        assert self.cls is not None
        steps = [*_split(self.path)[0], qname(self.cls.TAG)]
        found = [e for e in el.iterfind("/".join(steps)) if self.cls.present(e)]
        if self.many:
            return [self.cls.from_element(e) for e in found]
        if found:
            return self.cls.from_element(found[0])
        return self.default() if self.default is not None else None


T = TypeVar("T", bound="XMLObject")


class XMLObject:
    """A dataclass written to and read from one element by its FIELDS."""

    TAG: ClassVar[str]
    FIELDS: ClassVar[tuple[Binding, ...]]

    def to_element(self) -> ET.Element:
        el = ET.Element(qname(self.TAG))
        for binding in self.FIELDS:
            binding.build(el, self)
        return el

    @classmethod
    def from_element(cls: type[T], el: ET.Element) -> T:
        return cls(**{b.attr: b.parse(el) for b in cls.FIELDS if b.attr is not None})

    @classmethod
    def present(cls, el: ET.Element) -> bool:
        """Whether ``el`` (of this tag) stands for an object at all (for parsing)."""
        return True

    def to_xml(self) -> str:
        el = self.to_element()
        ET.indent(el)
        return ET.tostring(el, encoding="unicode") + "\n"

    @classmethod
    def from_xml(cls: type[T], xml: str) -> T:
        return cls.from_element(ET.fromstring(xml))
