"""The FAKE vboxapi itself: checked against vbox-sdk's generated constants and VirtualBox's
interface names, and its state machine against what VirtualBox documents.

vbox-sdk (PyPI) ships ``vboxapi/VirtualBox_constants.py``, generated from VirtualBox.xidl,
but not the XIDL: enum values and result codes are checked against the package (when it
is installed: the dev extra has it). Method and attribute names are checked against
``INTERFACES`` below, a list read off VirtualBox's sources (7.1+, the API with
IPlatform/IFirmwareSettings): IMachine from the generated ``MachineWrap.h``; ISerialPort
(``IOAddress``) from ``SerialPortImpl.h``; INATEngine from ``NATEngineImpl.h``;
``IHost.getProcessorFeature`` from ``HostImpl.h``; ``createMachine``'s nine parameters
and ``INATEngine.localhostReachable`` from ``VirtualBox.xidl``; the rest (IMedium,
ISession, IConsole, IProgress, IAudioSettings.adapter) from the SDK reference.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import api, vdi
from tests.support.fake_vboxapi.constants import ENUMS, RESULTS, FakeConstants
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.probe import PROBE_SECTOR
from xwvm.worker.drivers.virtualbox import config, driver, policy

SOURCES = Path(driver.__file__).parent

# The API names the driver uses, per interface, as VirtualBox declares them (attributes
# appear in the Impl headers as getX/setX, methods under their own name).
INTERFACES: dict[str, tuple[str, list[str]]] = {
    "IVirtualBox": ("vbox", [
        "version", "host", "machines", "hardDisks", "DVDImages", "findMachine",
        "createMachine", "registerMachine", "openMedium", "createMedium"]),
    "IHost": ("host", ["getProcessorFeature"]),
    "IMachine": ("machine", [
        "name", "description", "CPUCount", "memorySize", "CPUExecutionCap", "clipboardMode",
        "dnDMode", "audioSettings", "VRDEServer", "firmwareSettings", "USBControllers",
        "USBDeviceFilters", "sharedFolders", "mediumAttachments", "state", "sessionState",
        "settingsFilePath", "getNetworkAdapter", "getSerialPort", "setBootOrder",
        "addStorageController", "attachDevice", "removeUSBController", "removeSharedFolder",
        "setExtraData", "getExtraData", "saveSettings", "lockMachine", "launchVMProcess",
        "unregister", "deleteConfig"]),
    "ISession": ("session", ["machine", "console", "state", "unlockMachine"]),
    "IConsole": ("console", ["powerButton", "powerDown"]),
    "IMedium": ("medium", [
        "location", "type", "readOnly", "logicalSize", "parent", "children", "machineIds",
        "deviceType", "createDiffStorage", "resize", "deleteStorage", "close"]),
    "IProgress": ("progress", ["waitForCompletion", "completed", "resultCode",
                                     "errorInfo"]),
}
SUB_OBJECTS = {  # interfaces the fake models as settings objects (_Sub), with their names
    "ISerialPort": ["enabled", "hostMode", "path", "IOAddress", "IRQ"],
    "INetworkAdapter": ["enabled", "attachmentType", "NATEngine"],
    "INATEngine": ["redirects", "addRedirect", "removeRedirect", "localhostReachable",
                   "DNSPassDomain"],
    "IAudioAdapter": ["enabled"],
    "IVRDEServer": ["enabled"],
    "IFirmwareSettings": ["firmwareType"],
    "IStorageController": ["portCount"],
    "IUSBDeviceFilters": ["deviceFilters", "removeDeviceFilter"],
}


@pytest.fixture
def svc() -> object:
    s = fake_vboxapi.start_service()
    yield s
    fake_vboxapi.stop_service()


def _sdk_constants() -> object:
    import vboxapi.VirtualBox_constants as mod  # vbox-sdk: a dev dependency
    return mod.VirtualBoxReflectionInfo(False)


# -- against vbox-sdk -------------------------------------------------------------------

def test_fake_enum_values_and_result_codes_are_vbox_sdks() -> None:
    real = _sdk_constants()
    for enum, values in ENUMS.items():
        real_values = real.all_values(enum)
        assert real_values, f"vbox-sdk has no enum {enum}"
        for name, value in values.items():
            assert real_values.get(name) == value, f"{enum}_{name}"
    for name, code in RESULTS.items():
        assert getattr(real, name) == code, name


def test_fake_com_codes_are_the_ones_vboxapi_uses() -> None:
    import vboxapi  # vbox-sdk: a dev dependency
    source = Path(vboxapi.__file__).read_text()
    # XPCOM's E_ACCESSDENIED, as vboxapi defines it for COM compatibility.
    assert re.search(r"E_ACCESSDENIED = -2147024891", source)
    assert api.FakeXPCOMError("E_ACCESSDENIED", "x").errno == -2147024891


def test_every_constant_the_driver_names_exists_in_vbox_sdk() -> None:
    real = _sdk_constants()
    names: set[str] = set()
    for path in SOURCES.glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\bc\.([A-Z][A-Za-z0-9]*_[A-Za-z0-9_]+)", text))
        names |= {f"{e}_{v}" for e, v in re.findall(r'_enum\(c, "(\w+)", "(\w+)"\)', text)}
    assert len(names) > 15
    for name in sorted(names):
        getattr(real, name)  # AttributeError if VirtualBox has no such constant


def test_every_setting_the_profile_writes_is_a_vbox_sdk_enum_value(svc: object,
                                                                     tmp_path: Path) -> None:
    """Apply the whole profile onto a fake machine with vbox-sdk's own constants: an enum
    name VirtualBox does not have raises."""
    from xwvm.worker.drivers import VMSpec
    real = _sdk_constants()
    vbox = api.FakeVirtualBox(fake_vboxapi.service())
    machine = vbox.createMachine(str(tmp_path / "m.vbox"), "m", 1, [], "Linux_64", "", "",
                                 "", "")
    spec = VMSpec("j", "w", tmp_path / "t.vdi", network=NetworkPolicy.SERVER,
                  server_endpoint=("192.0.2.1", 443))
    settings = policy.settings_for(spec, policy.Placement("m", tmp_path, tmp_path / "c.log",
                                                          None, None, lan_nat=True))
    settings.controller, settings.drives = None, []
    settings.apply(machine, real)
    assert machine.getNetworkAdapter(0).attachmentType == real.NetworkAttachmentType_NAT


def _instances(tmp_path: Path) -> dict[str, object]:
    """One fake object of each interface (a running VM, for the console)."""
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    c = mgr.constants
    vbox, m = _machine(tmp_path)
    base = tmp_path / "base.vdi"
    vdi.write(base, 1 << 20)
    medium = vbox.openMedium(str(base), c.DeviceType_HardDisk, c.AccessMode_ReadOnly, False)
    session = mgr.getSessionObject()
    progress = m.launchVMProcess(session, "headless", [])
    progress.waitForCompletion(-1)
    return {"vbox": vbox, "host": vbox.host, "machine": m, "session": session,
            "console": session.console, "medium": medium, "progress": progress}


def test_fake_objects_have_virtualboxs_names(svc: object, tmp_path: Path) -> None:
    objects = _instances(tmp_path)
    for interface, (key, names) in INTERFACES.items():
        for name in names:
            assert hasattr(objects[key], name), f"fake {interface} lacks {name}"


def test_fake_settings_objects_have_virtualboxs_names(svc: object, tmp_path: Path) -> None:
    vbox = api.FakeVirtualBox(fake_vboxapi.service())
    m = vbox.createMachine(str(tmp_path / "m.vbox"), "m", 1, [], "", "", "", "", "")
    objects = {"ISerialPort": m.getSerialPort(0), "INetworkAdapter": m.getNetworkAdapter(0),
               "INATEngine": m.getNetworkAdapter(0).NATEngine,
               "IAudioAdapter": m.audioSettings.adapter, "IVRDEServer": m.VRDEServer,
               "IFirmwareSettings": m.firmwareSettings,
               "IStorageController": m.addStorageController("S", 2),
               "IUSBDeviceFilters": m.USBDeviceFilters}
    for interface, names in SUB_OBJECTS.items():
        for name in names:
            assert hasattr(objects[interface], name), f"fake {interface} lacks {name}"


def test_the_driver_calls_only_names_listed_for_the_fake() -> None:
    """Every ``.name(`` the driver calls on an API object is in INTERFACES/SUB_OBJECTS."""
    known = {n for _, names in INTERFACES.values() for n in names}
    known |= {n for names in SUB_OBJECTS.values() for n in names}
    ours = {"translated", "session", "launch", "wait", "connect", "close", "status",
            "translate", "_retrying", "getSessionObject", "getVirtualBox",
            "xcptGetStatus", "xcptGetMessage", "deinit", "all_values", "VirtualBoxManager"}
    called: set[str] = set()
    for path in SOURCES.glob("*.py"):
        text = path.read_text()
        called |= set(re.findall(r"\b(?:machine|m|vbox|medium|template|diff|progress|s|"
                                 r"session|nat|filters|port|adapter|ctl|host\.vbox|"
                                 r"self\.machine|child|parent|c)\.([a-zA-Z]\w*)\(", text))
    unknown = sorted(called - known - ours - {"split", "items", "update", "exists"})
    assert unknown == [], f"add these to INTERFACES after checking VirtualBox: {unknown}"


# -- the fake's state machine -------------------------------------------------------------

def _machine(tmp_path: Path, name: str = "vm") -> tuple[api.FakeVirtualBox, api.FakeMachine]:
    vbox = api.FakeVirtualBox(fake_vboxapi.service())
    m = vbox.createMachine(str(tmp_path / name / f"{name}.vbox"), name, 1, [], "Linux_64",
                           "", "", "", "")
    vbox.registerMachine(m)
    return vbox, m


def test_fake_without_virtualbox_fails_like_vboxapi() -> None:
    fake_vboxapi.stop_service()
    with pytest.raises(ModuleNotFoundError, match="xpcom"):
        fake_vboxapi.VirtualBoxManager(None, None)


def test_fake_registered_machine_changes_need_a_session_and_saveSettings(
        svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    vbox, m = _machine(tmp_path)
    with pytest.raises(api.FakeXPCOMError) as e:
        m.CPUCount = 2
    assert mgr.xcptGetStatus(e.value) & 0xFFFFFFFF == mgr.constants.VBOX_E_INVALID_VM_STATE
    s = mgr.getSessionObject()
    m.lockMachine(s, mgr.constants.LockType_Write)
    s.machine.CPUCount = 2
    s.unlockMachine()  # not saved: discarded
    assert vbox.findMachine("vm").CPUCount == 1
    m.lockMachine(s, mgr.constants.LockType_Write)
    s.machine.CPUCount = 2
    s.machine.saveSettings()
    s.unlockMachine()
    assert vbox.findMachine("vm").CPUCount == 2
    with pytest.raises(api.FakeXPCOMError):
        vbox.registerMachine(m)  # twice


def test_fake_write_lock_is_exclusive(svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    _, m = _machine(tmp_path)
    first, second = mgr.getSessionObject(), mgr.getSessionObject()
    m.lockMachine(first, mgr.constants.LockType_Write)
    with pytest.raises(api.FakeXPCOMError, match="already locked"):
        m.lockMachine(second, mgr.constants.LockType_Write)
    first.unlockMachine()
    m.lockMachine(second, mgr.constants.LockType_Write)


def test_fake_vm_states_and_the_asynchronous_lock_release(svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    c = mgr.constants
    _, m = _machine(tmp_path)
    s = mgr.getSessionObject()
    progress = m.launchVMProcess(s, "headless", [])
    assert m.state == c.MachineState_Starting
    progress.waitForCompletion(-1)
    assert progress.completed and progress.resultCode == 0
    assert m.state == c.MachineState_Running
    s.unlockMachine()
    shared = mgr.getSessionObject()
    m.lockMachine(shared, c.LockType_Shared)
    down = shared.console.powerDown()
    assert m.state == c.MachineState_Stopping
    down.waitForCompletion(-1)
    shared.unlockMachine()
    assert m.state == c.MachineState_PoweredOff
    with pytest.raises(api.FakeXPCOMError, match="being unlocked"):
        m.lockMachine(mgr.getSessionObject(), c.LockType_Write)  # VBoxSVC has not noticed yet
    time.sleep(api.UNLOCK_DELAY_S * 2)
    m.lockMachine(mgr.getSessionObject(), c.LockType_Write)


def test_fake_vm_process_death_reads_as_aborted(svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    _, m = _machine(tmp_path)
    m.launchVMProcess(mgr.getSessionObject(), "headless", []).waitForCompletion(-1)
    fake_vboxapi.service().find("vm").process.kill()
    time.sleep(0.1)
    assert m.state == mgr.constants.MachineState_Aborted


def test_fake_media_immutable_read_only_and_differencing(svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    c = mgr.constants
    vbox = mgr.getVirtualBox()
    base = tmp_path / "base.vdi"
    vdi.write(base, 8 << 20)
    t = vbox.openMedium(str(base), c.DeviceType_HardDisk, c.AccessMode_ReadOnly, False)
    assert vbox.openMedium(str(base), c.DeviceType_HardDisk, c.AccessMode_ReadOnly, False) == t
    t.type = c.MediumType_Immutable
    diff = vbox.createMedium("VDI", str(tmp_path / "d.vdi"), c.AccessMode_ReadWrite,
                             c.DeviceType_HardDisk)
    t.createDiffStorage(diff, [c.MediumVariant_Diff]).waitForCompletion(-1)
    assert diff.parent == t and t.children == [diff]
    assert vdi.read_header(Path(diff.location))["parent"] == t.id
    with pytest.raises(api.FakeXPCOMError, match="differencing children"):
        t.close()
    with pytest.raises(api.FakeXPCOMError, match="differencing medium"):
        diff.type = c.MediumType_Immutable
    diff.deleteStorage().waitForCompletion(-1)
    with pytest.raises(api.FakeXPCOMError, match="read-only"):
        t.deleteStorage()
    t.close()
    assert base.exists()
    with pytest.raises(api.FakeXPCOMError) as e:
        vbox.openMedium(str(tmp_path / "nothing.vdi"), c.DeviceType_HardDisk,
                        c.AccessMode_ReadOnly, False)
    assert e.value.errno & 0xFFFFFFFF == c.VBOX_E_FILE_ERROR


def test_fake_refuses_to_boot_a_read_only_disk(svc: object, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    c = mgr.constants
    vbox, m = _machine(tmp_path)
    base = tmp_path / "base.vdi"
    vdi.write(base, 8 << 20)
    t = vbox.openMedium(str(base), c.DeviceType_HardDisk, c.AccessMode_ReadOnly, False)
    s = mgr.getSessionObject()
    m.lockMachine(s, c.LockType_Write)
    s.machine.addStorageController("SATA", c.StorageBus_SATA)
    s.machine.attachDevice("SATA", 0, 0, c.DeviceType_HardDisk, t)
    s.machine.saveSettings()
    s.unlockMachine()
    with pytest.raises(api.FakeXPCOMError, match="read-only"):
        m.launchVMProcess(mgr.getSessionObject(), "headless", [])


def test_vdi_files_of_the_fake_and_the_driver_are_read_by_qemu_img(tmp_path: Path) -> None:
    """qemu-img, a real VDI consumer, reads the fake's images and the driver's probe disk
    (not differencing VDIs: qemu-img refuses those, "non-NULL link UUID")."""
    from xwvm.worker.drivers.virtualbox import disk
    base, diff, probe = tmp_path / "b.vdi", tmp_path / "d.vdi", tmp_path / "p.vdi"
    parent = vdi.write(base, 64 << 20, sector0=b"x" * 512)
    vdi.write(diff, 64 << 20, diff_of=parent)
    vdi.set_size(diff, 128 << 20)
    disk.write_vdi(probe, 1 << 20, PROBE_SECTOR)
    assert vdi.read_header(diff)["size"] == 128 << 20
    for path, size in ((base, 64 << 20), (probe, 1 << 20)):
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                         capture_output=True, text=True, check=True).stdout)
        assert (info["format"], info["virtual-size"]) == ("vdi", size)
    raw = tmp_path / "p.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vdi", "-O", "raw", str(probe), str(raw)],
                   check=True)
    assert raw.read_bytes()[:512] == PROBE_SECTOR
    assert disk.has_boot_sector(probe) is True
    assert disk.has_boot_sector(base) is False


def test_fake_constants_object_behaves_like_vboxapis() -> None:
    c = FakeConstants()
    assert c.MachineState_Running == 6 and c.all_values("LockType")["Write"] == 2
    with pytest.raises(AttributeError):
        _ = c.MachineState_Flying
    assert config.NIC_SLOTS == 8
