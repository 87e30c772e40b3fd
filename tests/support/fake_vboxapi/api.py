"""The FAKE VirtualBox's COM objects, with the real API's names, states and result codes.

Only what the xwvm driver uses, each behaving as VirtualBox documents it (SDK reference,
VirtualBox 7.1/7.2). Names follow the XPCOM Python binding: attributes are Python
attributes (``machine.CPUCount``), methods keep their IDL names (``lockMachine``).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.fake_vboxapi import guest as fake_guest
from tests.support.fake_vboxapi import vdi, vmdk
from tests.support.fake_vboxapi.constants import COM_RESULTS, RESULTS, FakeConstants, signed
from tests.support.fake_vboxapi.remote import Remote

C = FakeConstants()
VERSION = "7.1.6"
UNLOCK_DELAY_S = 0.05  # VBoxSVC notices a closed VM session this long after the process ends


class FakeXPCOMError(Exception):
    """Like ``xpcom.Exception``: ``errno`` is the (signed) result code, ``msg`` the text."""

    def __init__(self, code: str, msg: str) -> None:
        self.errno = signed(RESULTS.get(code) or COM_RESULTS[code])
        self.msg = msg
        super().__init__(self.errno, msg)


def _fail(code: str, msg: str) -> FakeXPCOMError:
    return FakeXPCOMError(code, msg)


# -- the service (VBoxSVC) --------------------------------------------------------------------

class FakeService:
    """What VBoxSVC holds: registered machines and media, running VM processes."""

    def __init__(self, *, hw_virt: bool = True, version: str = VERSION,
                 home: Path | None = None) -> None:
        self.hw_virt, self.version = hw_virt, version
        self.home = home or Path("/nonexistent/VirtualBox VMs")
        self.machines: list[_MachineData] = []
        self.media: dict[str, _MediumData] = {}  # registered, by location
        self.progresses: list[FakeProgress] = []
        self.lock_busy: dict[str, int] = {}  # machine name -> lockMachine calls to refuse
        self.calls: list[str] = []
        self.epoch = 0  # VBoxSVC's incarnation: proxies got from an earlier one are dead
        self.down_until = 0.0  # while VBoxSVC restarts, no client can connect
        # API name -> seconds: VBoxSVC restarts (down that long) as a client next uses it.
        self.restart_on: dict[str, float] = {}

    def tick(self) -> None:
        now = time.monotonic()
        for p in list(self.progresses):
            p._poll(now)
        for m in self.machines:
            m.run(now)

    def find(self, name: str) -> _MachineData | None:
        return next((m for m in self.machines if m.name == name or m.id == name), None)

    def vm_pid(self, name: str) -> int:
        m = self.find(name)
        assert m is not None and m.process is not None, f"fake: {name} has no VM process"
        return m.process.pid

    def shutdown(self) -> None:
        for m in self.machines:
            m.kill_process()

    def restart(self, down_s: float = 0.0) -> None:
        """VBoxSVC dies and is back after ``down_s``. Every proxy a client holds is dead;
        VM processes exit (VirtualBox's frontends do when VBoxSVC becomes unavailable),
        leaving their machines Aborted; sessions are unlocked; pending progress objects
        never complete. Registered machines and media stay (their settings files do)."""
        self.calls.append(f"restart {down_s:g}")
        self.epoch += 1
        self.down_until = time.monotonic() + down_s
        self.progresses.clear()
        for m in self.machines:
            if m.process is not None or m.state in (
                    C.MachineState_Running, C.MachineState_Starting, C.MachineState_Paused,
                    C.MachineState_Stopping, C.MachineState_Stuck):
                m.end(C.MachineState_Aborted)
            m.session_state, m.unlocked_at = C.SessionState_Unlocked, None

    def hook(self, name: str) -> None:
        """A client uses API ``name``: restart first if a test asked for it then."""
        down_s = self.restart_on.pop(name, None)
        if down_s is not None:
            self.restart(down_s)

    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def dead(self, what: str) -> FakeXPCOMError:
        return FakeXPCOMError("NS_ERROR_CALL_FAILED", f"fake: {what}: the VBoxSVC this "
                                                      "object came from is gone")


_service: FakeService | None = None


def start_service(**kw: Any) -> FakeService:
    global _service
    _service = FakeService(**kw)
    return _service


def stop_service() -> None:
    global _service
    if _service is not None:
        _service.shutdown()
    _service = None


def service() -> FakeService:
    assert _service is not None, "fake: no VirtualBox service started"
    return _service


# -- the manager ----------------------------------------------------------------------------

class VirtualBoxManager:
    """vboxapi.VirtualBoxManager: without VirtualBox installed, the real one fails while
    importing its XPCOM bindings (ModuleNotFoundError: No module named 'xpcom')."""

    def __init__(self, sStyle: str | None = None, dPlatformParams: Any = None) -> None:
        if _service is None:
            raise ModuleNotFoundError("No module named 'xpcom'")
        self.svc = _service
        self.constants = C
        self.oXcptClass = FakeXPCOMError
        self.style, self.type = "XPCOM", "XPCOM"

    def getVirtualBox(self) -> Any:
        """A proxy of IVirtualBox (a new VirtualBoxClient each call, as vboxapi's)."""
        if self.svc is not _service or not self.svc.up():
            raise FakeXPCOMError("NS_ERROR_CALL_FAILED", "fake: VBoxSVC is not running")
        return Remote(FakeVirtualBox(self.svc), self.svc)

    def getSessionObject(self, oIVBox: Any = None) -> Any:
        return Remote(FakeSession(self.svc), self.svc)

    def getArray(self, obj: Any, attr: str) -> list[Any]:
        return list(getattr(obj, attr))

    def xcptGetStatus(self, e: BaseException | None = None) -> int:
        return int(getattr(e, "errno", COM_RESULTS["E_FAIL"]))

    def xcptGetMessage(self, e: BaseException | None = None) -> str:
        return str(getattr(e, "msg", e))

    def xcptIsOurXcptKind(self, e: BaseException | None = None) -> bool:
        return isinstance(e, FakeXPCOMError)

    def xcptIsDeadInterface(self, e: BaseException | None = None) -> bool:
        """As vboxapi's XPCOM platform: NS_ERROR_ABORT or NS_ERROR_CALL_FAILED."""
        return self.xcptGetStatus(e) in (signed(COM_RESULTS["NS_ERROR_ABORT"]),
                                         signed(COM_RESULTS["NS_ERROR_CALL_FAILED"]))

    def deinit(self) -> bool:
        return True


class FakeHost:
    def __init__(self, svc: FakeService) -> None:
        self._svc = svc
        self.processorCount = 2
        self.memorySize = 4096

    def getProcessorFeature(self, feature: int) -> bool:
        if feature == C.ProcessorFeature_HWVirtEx:
            return self._svc.hw_virt
        return True


class FakeSystemProperties:
    def __init__(self, svc: FakeService) -> None:
        self.defaultMachineFolder = str(svc.home)


class FakeVirtualBox:
    """IVirtualBox."""

    def __init__(self, svc: FakeService) -> None:
        self._svc = svc
        self.version = svc.version
        self.revision = 168469
        self.APIVersion = "7_1"
        self.host = FakeHost(svc)
        self.systemProperties = FakeSystemProperties(svc)

    @property
    def machines(self) -> list[FakeMachine]:
        self._svc.tick()
        return [FakeMachine(m) for m in self._svc.machines]

    @property
    def hardDisks(self) -> list[FakeMedium]:
        return [FakeMedium(self._svc, m) for m in self._svc.media.values()
                if m.device == C.DeviceType_HardDisk and m.parent is None]

    @property
    def DVDImages(self) -> list[FakeMedium]:
        return [FakeMedium(self._svc, m) for m in self._svc.media.values()
                if m.device == C.DeviceType_DVD]

    def findMachine(self, nameOrId: str) -> FakeMachine:
        self._svc.tick()
        m = self._svc.find(nameOrId)
        if m is None:
            raise _fail("VBOX_E_OBJECT_NOT_FOUND",
                        f"Could not find a registered machine named '{nameOrId}'")
        return FakeMachine(m)

    def createMachine(self, settingsFile: str, name: str, platform: int, groups: list[str],
                      osTypeId: str, flags: str, cipher: str, passwordId: str,
                      password: str) -> FakeMachine:
        if platform != C.PlatformArchitecture_x86:
            raise _fail("E_INVALIDARG", "fake: only x86 machines")
        path = Path(settingsFile or self._svc.home / name / f"{name}.vbox")
        if path.exists():
            raise _fail("VBOX_E_FILE_ERROR", f"Machine settings file '{path}' already exists")
        data = _MachineData(self._svc, name, str(path), osTypeId)
        return FakeMachine(data, data.config)

    def registerMachine(self, machine: FakeMachine) -> None:
        data = machine._data
        if data in self._svc.machines or self._svc.find(data.id):
            raise _fail("E_INVALIDARG", f"Registered machine with UUID {{{data.id}}} "
                                        "already exists")
        if self._svc.find(data.name):
            raise _fail("VBOX_E_OBJECT_IN_USE", f"A machine named '{data.name}' exists")
        data.save()
        data.config.mutable = False
        self._svc.machines.append(data)

    def openMedium(self, location: str, deviceType: int, accessMode: int,
                   forceNewUuid: bool) -> FakeMedium:
        existing = self._svc.media.get(location)
        if existing is not None:
            if existing.device != deviceType:
                raise _fail("VBOX_E_OBJECT_IN_USE", f"'{location}' is registered as "
                                                    "another device type")
            return FakeMedium(self._svc, existing)
        path = Path(location)
        if not path.is_file():
            raise _fail("VBOX_E_FILE_ERROR", f"Could not find file for the medium '{location}'")
        fmt, size, image_uuid = "RAW", path.stat().st_size, str(uuid.uuid4())
        extents: list[Path] = []
        if deviceType == C.DeviceType_HardDisk and vmdk.is_descriptor(path):
            try:
                size, found_uuid, extents = vmdk.read_descriptor(path)
            except FileNotFoundError as e:
                raise _fail("VBOX_E_FILE_ERROR", f"Could not open the medium '{location}': "
                                                 f"extent {e} missing") from None
            fmt, image_uuid = "VMDK", found_uuid or image_uuid
        elif deviceType == C.DeviceType_HardDisk:
            try:
                head = vdi.read_header(path)
            except vdi.NotVDI:
                raise _fail("VBOX_E_IPRT_ERROR", f"Could not get the storage format of the "
                                                 f"medium '{location}' (VERR_NOT_SUPPORTED)"
                            ) from None
            if head["type"] == vdi.TYPE_DIFF:
                raise _fail("VBOX_E_OBJECT_NOT_FOUND", "fake: parent of differencing "
                                                       "image not registered")
            fmt, size, image_uuid = "VDI", int(head["size"]), str(head["uuid"])  # type: ignore[call-overload]
        medium = _MediumData(location, deviceType, fmt, size, image_uuid)
        medium.extents = extents
        medium.read_only = accessMode == C.AccessMode_ReadOnly
        medium.type = C.MediumType_Readonly if deviceType == C.DeviceType_DVD else \
            C.MediumType_Normal
        self._svc.media[location] = medium
        return FakeMedium(self._svc, medium)

    def createMedium(self, format: str, location: str, accessMode: int,
                     aDeviceTypeType: int) -> FakeMedium:
        if format.upper() != "VDI" or aDeviceTypeType != C.DeviceType_HardDisk:
            raise _fail("VBOX_E_NOT_SUPPORTED", "fake: only VDI hard disks are created")
        if location in self._svc.media or Path(location).exists():
            raise _fail("VBOX_E_FILE_ERROR", f"Cannot create storage '{location}': exists")
        medium = _MediumData(location, aDeviceTypeType, "VDI", 0, str(uuid.uuid4()))
        medium.state = C.MediumState_NotCreated
        return FakeMedium(self._svc, medium)


# -- media ----------------------------------------------------------------------------------

class _MediumData:
    def __init__(self, location: str, device: int, fmt: str, size: int, image_uuid: str) -> None:
        self.location, self.device, self.format = location, device, fmt
        self.logical_size, self.id = size, image_uuid
        self.state = C.MediumState_Created
        self.type = C.MediumType_Normal
        self.read_only = False
        self.parent: _MediumData | None = None
        self.children: list[_MediumData] = []
        self.extents: list[Path] = []  # a VMDK descriptor's data files, deleted with it

    def delete_files(self) -> None:
        for path in [Path(self.location), *self.extents]:
            path.unlink(missing_ok=True)


def _attached_to(svc: FakeService, medium: _MediumData) -> list[_MachineData]:
    return [m for m in svc.machines
            if any(a.medium is medium for a in m.config.attachments)]


class FakeMedium:
    """IMedium."""

    def __init__(self, svc: FakeService, data: _MediumData) -> None:
        self._svc, self._data = svc, data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeMedium) and other._data is self._data

    def __hash__(self) -> int:
        return id(self._data)

    id = property(lambda self: self._data.id)
    location = property(lambda self: self._data.location)
    name = property(lambda self: Path(self._data.location).name)
    format = property(lambda self: self._data.format)
    deviceType = property(lambda self: self._data.device)
    state = property(lambda self: self._data.state)
    readOnly = property(lambda self: self._data.read_only)
    logicalSize = property(lambda self: self._data.logical_size)
    parent = property(lambda self: FakeMedium(self._svc, self._data.parent)
                      if self._data.parent else None)
    children = property(lambda self: [FakeMedium(self._svc, c) for c in self._data.children])
    machineIds = property(lambda self: [m.id for m in _attached_to(self._svc, self._data)])

    @property
    def size(self) -> int:
        path = Path(self._data.location)
        return path.stat().st_size if path.exists() else 0

    @property
    def type(self) -> int:
        return self._data.type

    @type.setter
    def type(self, value: int) -> None:
        d = self._data
        if d.type == value:
            return
        if d.parent is not None:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", f"Cannot change the type of medium "
                                                       f"'{d.location}' because it is a "
                                                       "differencing medium")
        if _attached_to(self._svc, d):
            raise _fail("VBOX_E_OBJECT_IN_USE", f"Cannot change the type of medium "
                                                f"'{d.location}' since it is attached")
        if d.children and value not in (C.MediumType_Normal, C.MediumType_Immutable,
                                        C.MediumType_MultiAttach):
            raise _fail("VBOX_E_OBJECT_IN_USE", "Cannot change the type of a medium with "
                                                "differencing children to that type")
        d.type = value

    def createDiffStorage(self, target: FakeMedium, variant: list[int]) -> FakeProgress:
        parent, child = self._data, target._data
        if child.state != C.MediumState_NotCreated:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "the target medium already exists")
        if parent.state != C.MediumState_Created or parent.location not in self._svc.media:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "the parent medium is not usable")
        path = Path(child.location)
        if not path.parent.is_dir():
            raise _fail("VBOX_E_FILE_ERROR", f"Could not create '{path}': no such folder")
        vdi.write(path, parent.logical_size, diff_of=parent.id, image_uuid=child.id)
        child.state, child.logical_size, child.parent = C.MediumState_Created, \
            parent.logical_size, parent
        parent.children.append(child)
        self._svc.media[child.location] = child
        return FakeProgress(self._svc, "create differencing image")

    def resize(self, logicalSize: int) -> FakeProgress:
        d = self._data
        if logicalSize < d.logical_size:
            raise _fail("VBOX_E_NOT_SUPPORTED", "Shrinking is not supported")
        if d.read_only or d.format != "VDI":
            raise _fail("VBOX_E_NOT_SUPPORTED", f"Resizing '{d.location}' is not supported")
        vdi.set_size(Path(d.location), logicalSize)
        d.logical_size = logicalSize
        return FakeProgress(self._svc, "resize")

    def _check_unused(self, what: str) -> None:
        d = self._data
        if _attached_to(self._svc, d):
            raise _fail("VBOX_E_OBJECT_IN_USE", f"Cannot {what} '{d.location}': it is "
                                                "attached to a virtual machine")
        if d.children:
            raise _fail("VBOX_E_OBJECT_IN_USE", f"Cannot {what} '{d.location}': it has "
                                                "differencing children")

    def deleteStorage(self) -> FakeProgress:
        d = self._data
        self._check_unused("delete the storage of")
        if d.read_only:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", f"Medium '{d.location}' is read-only")
        d.delete_files()
        self._forget()
        return FakeProgress(self._svc, "delete storage")

    def close(self) -> None:
        self._check_unused("close")
        self._forget()

    def _forget(self) -> None:
        d = self._data
        self._svc.media.pop(d.location, None)
        if d.parent is not None and d in d.parent.children:
            d.parent.children.remove(d)
        d.state = C.MediumState_NotCreated


# -- progress -------------------------------------------------------------------------------

class _ErrorInfo:
    def __init__(self, code: int, text: str) -> None:
        self.resultCode, self.text = code, text


class FakeProgress:
    """IProgress: completes ``delay`` seconds after creation, then runs ``on_done``."""

    def __init__(self, svc: FakeService, what: str, delay: float = 0.0,
                 on_done: Callable[[], None] | None = None) -> None:
        self._svc, self.description = svc, what
        self._done_at = time.monotonic() + delay
        self._on_done = on_done
        self.completed, self.resultCode, self.errorInfo = False, 0, None
        self.percent, self.cancelable, self.canceled = 0, False, False
        svc.progresses.append(self)
        self._poll(time.monotonic())

    def _poll(self, now: float) -> None:
        if self.completed or now < self._done_at:
            return
        self.completed, self.percent = True, 100
        self._svc.progresses.remove(self)
        if self._on_done is not None:
            try:
                self._on_done()
            except FakeXPCOMError as e:
                self.resultCode, self.errorInfo = e.errno, _ErrorInfo(e.errno, e.msg)

    def waitForCompletion(self, timeout: int) -> None:
        deadline = None if timeout < 0 else time.monotonic() + timeout / 1000
        while not self.completed:
            self._svc.tick()
            if self.completed or (deadline is not None and time.monotonic() >= deadline):
                return
            time.sleep(0.01)


# -- machines: configuration ----------------------------------------------------------------

class _Config:
    """A machine's settings; a session's machine works on a copy until saveSettings."""

    def __init__(self, name: str, os_type: str) -> None:
        self.mutable = True
        self.values: dict[str, Any] = {
            "name": name, "description": "", "OSTypeId": os_type, "CPUCount": 1,
            "memorySize": 128, "CPUExecutionCap": 100,
            # Risky where a real default is not documented: the policy must set every one.
            "clipboardMode": C.ClipboardMode_Bidirectional,
            "dnDMode": C.DnDMode_Bidirectional,
        }
        self.audio = _Sub(self, {"enabled": True, "enabledIn": True, "enabledOut": True})
        self.vrde = _Sub(self, {"enabled": True, "authType": 0})
        self.firmware = _Sub(self, {"firmwareType": C.FirmwareType_BIOS})
        self.serials = [_Sub(self, {"slot": i, "enabled": False, "hostMode": 0, "path": "",
                                    "IOAddress": 0x3F8 - 0x100 * i, "IRQ": 4 - i % 2,
                                    "uartType": C.UartType_U16550A, "server": False})
                        for i in range(4)]
        self.nics = [_Sub(self, {"slot": i, "enabled": i == 0,
                                 "attachmentType": C.NetworkAttachmentType_NAT if i == 0 else
                                 C.NetworkAttachmentType_Null, "cableConnected": True,
                                 "bridgedInterface": "", "hostOnlyInterface": ""})
                     for i in range(8)]
        for n in self.nics:
            object.__setattr__(n, "NATEngine", _NATEngine(self))
        self.controllers: list[_Sub] = []
        self.attachments: list[_Attachment] = []
        self.usb: list[str] = ["OHCI"]
        self.usb_filters: list[str] = []
        self.shared_folders: list[str] = []
        self.boot_order = [C.DeviceType_Floppy, C.DeviceType_DVD, C.DeviceType_HardDisk,
                           C.DeviceType_Null]

    def check(self, what: str) -> None:
        if not self.mutable:
            raise _fail("VBOX_E_INVALID_VM_STATE", f"The machine is not mutable (cannot {what}"
                                                   "; lock it with a session first)")


class _Sub:
    """A settings sub-object (IAudioAdapter, IVRDEServer, ISerialPort, INetworkAdapter...):
    writable only through a mutable machine."""

    def __init__(self, cfg: _Config, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_cfg", cfg)
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, key: str, value: Any) -> None:
        if not hasattr(self, key):
            raise AttributeError(f"fake: no attribute {key}")
        self._cfg.check(f"set {key}")
        object.__setattr__(self, key, value)


class _NATEngine(_Sub):
    """INATEngine."""

    def __init__(self, cfg: _Config) -> None:
        super().__init__(cfg, {"localhostReachable": False, "DNSPassDomain": True,
                               "DNSProxy": False, "DNSUseHostResolver": False,
                               "hostIP": "", "network": ""})
        object.__setattr__(self, "_redirects", [])

    @property
    def redirects(self) -> list[str]:
        return list(self._redirects)

    def addRedirect(self, name: str, proto: int, hostIP: str, hostPort: int, guestIP: str,
                    guestPort: int) -> None:
        self._cfg.check("add a NAT redirect")
        if any(r.split(",")[0] == name for r in self._redirects):
            raise _fail("E_INVALIDARG", f"A NAT rule named '{name}' exists")
        self._redirects.append(f"{name},{proto},{hostIP},{hostPort},{guestIP},{guestPort}")

    def removeRedirect(self, name: str) -> None:
        self._cfg.check("remove a NAT redirect")
        self._redirects[:] = [r for r in self._redirects if r.split(",")[0] != name]


class _Attachment:
    """IMediumAttachment."""

    def __init__(self, controller: str, port: int, device: int, type: int,
                 medium: _MediumData | None, svc: FakeService) -> None:
        self.controller, self.port, self.device, self.type = controller, port, device, type
        self._medium_data, self._svc = medium, svc

    medium_data = property(lambda self: self._medium_data)

    @property
    def medium(self) -> FakeMedium | None:
        return FakeMedium(self._svc, self._medium_data) if self._medium_data else None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Attachment:
        return _Attachment(self.controller, self.port, self.device, self.type,
                           self._medium_data, self._svc)


class _MachineData:
    """One machine as VBoxSVC knows it: committed settings, extra data, runtime state."""

    def __init__(self, svc: FakeService, name: str, settings_file: str, os_type: str) -> None:
        self.svc, self.id = svc, str(uuid.uuid4())
        self.settings_file = settings_file
        self.config = _Config(name, os_type)
        self.extra: dict[str, str] = {}
        self.state = C.MachineState_PoweredOff
        self.session_state = C.SessionState_Unlocked
        self.unlocked_at: float | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.program: fake_guest.Program | None = None
        self.booted_at = 0.0
        self.printed = 0
        self.acpi_poweroff_at: float | None = None

    name = property(lambda self: self.config.values["name"])

    def save(self) -> None:
        path = Path(self.settings_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"id": self.id, "name": self.name, "extra": self.extra}))

    # runtime

    def run(self, now: float) -> None:
        if self.unlocked_at is not None and now >= self.unlocked_at:
            self.session_state, self.unlocked_at = C.SessionState_Unlocked, None
        if self.state != C.MachineState_Running or self.program is None:
            return
        if self.process is not None and self.process.poll() is not None:
            self.end(C.MachineState_Aborted)
            return
        t = now - self.booted_at
        due = [text for at, text in self.program.events if at <= t]
        if len(due) > self.printed:
            self.serial_write("".join(due[self.printed:]))
            self.printed = len(due)
        off = self.program.poweroff_at
        if (off is not None and t >= off) or \
                (self.acpi_poweroff_at is not None and now >= self.acpi_poweroff_at):
            self.end(C.MachineState_PoweredOff)

    def serial_write(self, text: str) -> None:
        port = self.config.serials[0]
        if port.enabled and port.hostMode == C.PortMode_RawFile and port.path:
            with open(port.path, "a") as f:
                f.write(text)

    def boot(self) -> None:
        port = self.config.serials[0]
        if port.enabled and port.hostMode == C.PortMode_RawFile and port.path:
            Path(port.path).write_text("")  # VirtualBox truncates the file at power on
        self.state, self.booted_at, self.printed = C.MachineState_Running, time.monotonic(), 0
        self.acpi_poweroff_at = None
        self.program = fake_guest.program_for(self.boot_sector())

    def boot_sector(self) -> bytes | None:
        disks = [a for a in self.config.attachments if a.type == C.DeviceType_HardDisk]
        medium = disks[0].medium_data if disks else None
        while medium is not None:
            sector = vdi.read_sector0(Path(medium.location))
            if sector is not None:
                return sector
            medium = medium.parent
        return None

    def end(self, state: int) -> None:
        self.kill_process()
        self.state, self.program = state, None
        self.session_state = C.SessionState_Unlocking
        self.unlocked_at = time.monotonic() + UNLOCK_DELAY_S

    def kill_process(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


class FakeMachine:
    """IMachine: a registered machine (read-only), or a session's / a new one (mutable)."""

    def __init__(self, data: _MachineData, config: _Config | None = None,
                 session: FakeSession | None = None) -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_cfg", config or data.config)
        object.__setattr__(self, "_session", session)

    _SETTINGS = ("name", "description", "CPUCount", "memorySize", "CPUExecutionCap",
                 "clipboardMode", "dnDMode", "OSTypeId")

    def __getattr__(self, key: str) -> Any:
        if key in self._SETTINGS:
            return self._cfg.values[key]
        raise AttributeError(f"fake IMachine has no attribute {key}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._SETTINGS or key == "OSTypeId":
            raise AttributeError(f"fake IMachine: {key} is read-only or unknown")
        self._cfg.check(f"set {key}")
        if key == "CPUExecutionCap" and not 1 <= value <= 100:
            raise _fail("E_INVALIDARG", "Invalid CPU execution cap value")
        self._cfg.values[key] = value

    id = property(lambda self: self._data.id)
    settingsFilePath = property(lambda self: self._data.settings_file)
    accessible = property(lambda self: True)
    audioSettings = property(lambda self: _AudioSettings(self._cfg))
    VRDEServer = property(lambda self: self._cfg.vrde)
    firmwareSettings = property(lambda self: self._cfg.firmware)
    storageControllers = property(lambda self: list(self._cfg.controllers))
    mediumAttachments = property(lambda self: list(self._cfg.attachments))
    USBControllers = property(lambda self: [_Named(n) for n in self._cfg.usb])
    USBDeviceFilters = property(lambda self: _USBFilters(self._cfg))
    sharedFolders = property(lambda self: [_Named(n) for n in self._cfg.shared_folders])

    @property
    def state(self) -> int:
        self._data.svc.tick()
        return self._data.state

    @property
    def sessionState(self) -> int:
        self._data.svc.tick()
        return self._data.session_state

    def getNetworkAdapter(self, slot: int) -> _Sub:
        return self._cfg.nics[slot]

    def getSerialPort(self, slot: int) -> _Sub:
        return self._cfg.serials[slot]

    def setBootOrder(self, position: int, device: int) -> None:
        self._cfg.check("set the boot order")
        if not 1 <= position <= 4:
            raise _fail("E_INVALIDARG", "Invalid boot position")
        self._cfg.boot_order[position - 1] = device

    def getBootOrder(self, position: int) -> int:
        return self._cfg.boot_order[position - 1]

    def addStorageController(self, name: str, connectionType: int) -> _Sub:
        self._cfg.check("add a storage controller")
        if any(c.name == name for c in self._cfg.controllers):
            raise _fail("VBOX_E_OBJECT_IN_USE", f"Storage controller named '{name}' exists")
        ctl = _Sub(self._cfg, {"name": name, "bus": connectionType, "portCount": 1,
                               "controllerType": C.StorageControllerType_IntelAhci,
                               "useHostIOCache": False, "bootable": True})
        self._cfg.controllers.append(ctl)
        return ctl

    def attachDevice(self, name: str, controllerPort: int, device: int, type: int,
                     medium: FakeMedium | None) -> None:
        self._cfg.check("attach a device")
        ctl = next((c for c in self._cfg.controllers if c.name == name), None)
        if ctl is None:
            raise _fail("VBOX_E_OBJECT_NOT_FOUND", f"No storage controller named '{name}'")
        if not 0 <= controllerPort < ctl.portCount or device != 0:
            raise _fail("E_INVALIDARG", f"Invalid port {controllerPort} for '{name}'")
        if any(a.controller == name and a.port == controllerPort for a in self._cfg.attachments):
            raise _fail("VBOX_E_OBJECT_IN_USE", f"Port {controllerPort} of '{name}' is in use")
        data = medium._data if medium is not None else None
        if data is not None:
            if data.device != type:
                raise _fail("E_INVALIDARG", "The medium is not of that device type")
            if type == C.DeviceType_HardDisk:
                if data.children:
                    raise _fail("VBOX_E_OBJECT_IN_USE", f"Medium '{data.location}' has "
                                                        "differencing children")
                others = [m for m in _attached_to(self._data.svc, data) if m is not self._data]
                if others and data.type != C.MediumType_Shareable:
                    raise _fail("VBOX_E_OBJECT_IN_USE", f"Medium '{data.location}' is "
                                                        "attached to another machine")
        self._cfg.attachments.append(_Attachment(name, controllerPort, device, type, data,
                                                 self._data.svc))

    def addUSBController(self, name: str, type: int) -> None:
        self._cfg.check("add a USB controller")
        self._cfg.usb.append(name)

    def removeUSBController(self, name: str) -> None:
        self._cfg.check("remove a USB controller")
        if name not in self._cfg.usb:
            raise _fail("VBOX_E_OBJECT_NOT_FOUND", f"No USB controller named '{name}'")
        self._cfg.usb.remove(name)

    def createSharedFolder(self, name: str, hostPath: str, writable: bool, automount: bool,
                           autoMountPoint: str) -> None:
        self._cfg.check("create a shared folder")
        self._cfg.shared_folders.append(name)

    def removeSharedFolder(self, name: str) -> None:
        self._cfg.check("remove a shared folder")
        self._cfg.shared_folders.remove(name)

    def setExtraData(self, key: str, value: str) -> None:
        # Extra data is written to the settings at once, with or without a session.
        if value:
            self._data.extra[key] = value
        else:
            self._data.extra.pop(key, None)

    def getExtraData(self, key: str) -> str:
        return self._data.extra.get(key, "")

    def getExtraDataKeys(self) -> list[str]:
        return list(self._data.extra)

    def saveSettings(self) -> None:
        if not self._cfg.mutable:
            raise _fail("VBOX_E_INVALID_VM_STATE", "The machine is not mutable")
        if self._session is not None:  # commit the session's copy
            self._data.config = copy.deepcopy(self._cfg)
            self._data.config.mutable = False
        self._data.save()

    def lockMachine(self, session: FakeSession, lockType: int) -> None:
        svc, data = self._data.svc, self._data
        svc.tick()
        svc.calls.append(f"lockMachine {data.name} {lockType}")
        if data not in svc.machines:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "Cannot lock an unregistered machine")
        if session.state != C.SessionState_Unlocked:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "The session is already in use")
        busy = svc.lock_busy.get(data.name, 0)
        if busy:
            svc.lock_busy[data.name] = busy - 1
        running = data.state in (C.MachineState_Running, C.MachineState_Starting,
                                 C.MachineState_Paused, C.MachineState_Stopping)
        if lockType == C.LockType_Shared and running and not busy:
            session._attach(data, write=False)
            return
        if busy or data.session_state != C.SessionState_Unlocked:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", f"The machine '{data.name}' is already "
                                                       "locked for a session (or being "
                                                       "unlocked)")
        session._attach(data, write=True)

    def launchVMProcess(self, session: FakeSession, name: str,
                        environmentChanges: list[str]) -> FakeProgress:
        svc, data = self._data.svc, self._data
        svc.tick()
        if data not in svc.machines:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "Cannot launch an unregistered machine")
        if data.session_state != C.SessionState_Unlocked:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", f"The machine '{data.name}' is already "
                                                       "locked by a session (or being locked "
                                                       "or unlocked)")
        if data.state not in (C.MachineState_PoweredOff, C.MachineState_Aborted,
                              C.MachineState_Saved):
            raise _fail("VBOX_E_INVALID_VM_STATE", "Invalid machine state")
        if name not in ("headless", "gui", "sdl", ""):
            raise _fail("E_INVALIDARG", f"Invalid frontend name: '{name}'")
        for a in data.config.attachments:
            m = a.medium_data
            if a.type == C.DeviceType_HardDisk and m is not None:
                if m.type == C.MediumType_Immutable:
                    raise _fail("VBOX_E_NOT_SUPPORTED", "fake: implicit differencing images "
                                                        "of immutable media are not modelled")
                if m.read_only:
                    raise _fail("E_ACCESSDENIED", f"Medium '{m.location}' is read-only and "
                                                  "cannot be written")
        data.state, data.session_state = C.MachineState_Starting, C.SessionState_Spawning
        data.process = subprocess.Popen(["sleep", "3600"])
        session._attach(data, write=False)

        def started() -> None:
            data.session_state = C.SessionState_Locked
            data.boot()

        return FakeProgress(svc, "launch VM process", 0.05, started)

    def unregister(self, cleanupMode: int) -> list[FakeMedium]:
        svc, data = self._data.svc, self._data
        svc.tick()
        if data.session_state != C.SessionState_Unlocked:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", f"Cannot unregister the machine "
                                                       f"'{data.name}' while it is locked")
        if data not in svc.machines:
            raise _fail("VBOX_E_OBJECT_NOT_FOUND", "The machine is not registered")
        atts = data.config.attachments
        if cleanupMode == C.CleanupMode_UnregisterOnly and atts:
            raise _fail("VBOX_E_INVALID_OBJECT_STATE", "The machine has media attached")
        media = [a.medium_data for a in atts if a.medium_data is not None]
        returned = []
        for m in media:
            disk = m.device == C.DeviceType_HardDisk
            if (disk and cleanupMode != C.CleanupMode_DetachAllReturnNone) or cleanupMode in (
                    C.CleanupMode_Full, C.CleanupMode_DetachAllReturnHardDisksAndVMRemovable):
                returned.append(m)
        data.config.attachments = []
        svc.machines.remove(data)
        return [FakeMedium(svc, m) for m in returned]

    def deleteConfig(self, media: list[FakeMedium]) -> FakeProgress:
        svc, data = self._data.svc, self._data
        if data in svc.machines:
            raise _fail("VBOX_E_INVALID_VM_STATE", "Cannot delete the settings of a "
                                                   "registered machine")
        for m in media:
            m._check_unused("delete")
        for m in media:
            m._data.delete_files()
            m._forget()
        folder = Path(data.settings_file).parent
        Path(data.settings_file).unlink(missing_ok=True)
        shutil.rmtree(folder / "Logs", ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return FakeProgress(svc, "delete machine files")


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class _USBFilters:
    """IUSBDeviceFilters."""

    def __init__(self, cfg: _Config) -> None:
        self._cfg = cfg

    @property
    def deviceFilters(self) -> list[_Named]:
        return [_Named(n) for n in self._cfg.usb_filters]

    def removeDeviceFilter(self, position: int) -> None:
        self._cfg.check("remove a USB device filter")
        self._cfg.usb_filters.pop(position)


class _AudioSettings:
    """IAudioSettings (VirtualBox 7): the audio adapter."""

    def __init__(self, cfg: _Config) -> None:
        self.adapter = cfg.audio


# -- sessions and the console ---------------------------------------------------------------

class FakeConsole:
    """IConsole of a running VM (a Shared lock, or the session launchVMProcess used)."""

    def __init__(self, data: _MachineData) -> None:
        self._data = data

    def powerButton(self) -> None:
        d = self._data
        d.svc.tick()
        if d.state != C.MachineState_Running:
            raise _fail("VBOX_E_INVALID_VM_STATE", "Invalid machine state: not running")
        if d.program is not None and d.program.obeys_acpi:
            d.acpi_poweroff_at = time.monotonic() + 0.1

    def powerDown(self) -> FakeProgress:
        d = self._data
        d.svc.tick()
        if d.state not in (C.MachineState_Running, C.MachineState_Paused,
                           C.MachineState_Starting, C.MachineState_Stuck):
            raise _fail("VBOX_E_INVALID_VM_STATE", "Invalid machine state (must be running, "
                                                   "paused or stuck)")
        d.state = C.MachineState_Stopping
        return FakeProgress(d.svc, "power down", 0.05, lambda: d.end(C.MachineState_PoweredOff))


class FakeSession:
    """ISession."""

    def __init__(self, svc: FakeService) -> None:
        self._svc = svc
        self.state = C.SessionState_Unlocked
        self.type = 0
        self.machine: FakeMachine | None = None
        self.console: FakeConsole | None = None
        self._data: _MachineData | None = None
        self._write = False

    def _attach(self, data: _MachineData, write: bool) -> None:
        self._data, self._write, self.state = data, write, C.SessionState_Locked
        if write:
            data.session_state = C.SessionState_Locked
            cfg = copy.deepcopy(data.config)
            cfg.mutable = True
            self.machine = FakeMachine(data, cfg, self)
        else:
            self.machine = FakeMachine(data, None, self)
        self.console = FakeConsole(data)

    def unlockMachine(self) -> None:
        if self.state != C.SessionState_Locked or self._data is None:
            raise _fail("VBOX_E_INVALID_SESSION_STATE", "The session is not locked")
        if self._write:  # a direct session closes at once; unsaved changes are discarded
            self._data.session_state = C.SessionState_Unlocked
        self.state, self.machine, self.console, self._data = C.SessionState_Unlocked, None, \
            None, None
