"""The FAKE's copy of the vboxapi constants the driver uses (enum values, result codes).

The numbers are VirtualBox's own: tests/worker/drivers/test_virtualbox_fake_api.py checks
every one against vbox-sdk's ``vboxapi/VirtualBox_constants.py`` (generated from
VirtualBox.xidl). Access works like the real ``VirtualBoxManager.constants``:
``c.MachineState_Running`` and ``c.all_values("MachineState")``.
"""

from __future__ import annotations

ENUMS: dict[str, dict[str, int]] = {
    "MachineState": {"Null": 0, "PoweredOff": 1, "Saved": 2, "Teleported": 3, "Aborted": 4,
                     "AbortedSaved": 5, "Running": 6, "Paused": 7, "Stuck": 8,
                     "Teleporting": 9, "LiveSnapshotting": 10, "Starting": 11,
                     "Stopping": 12, "Saving": 13, "Restoring": 14,
                     "TeleportingPausedVM": 15, "OnlineSnapshotting": 19, "SettingUp": 22},
    "SessionState": {"Null": 0, "Unlocked": 1, "Locked": 2, "Spawning": 3, "Unlocking": 4},
    "LockType": {"Null": 0, "Shared": 1, "Write": 2, "VM": 3},
    "AccessMode": {"ReadOnly": 1, "ReadWrite": 2},
    "DeviceType": {"Null": 0, "Floppy": 1, "DVD": 2, "HardDisk": 3, "Network": 4, "USB": 5},
    "MediumType": {"Normal": 0, "Immutable": 1, "Writethrough": 2, "Shareable": 3,
                   "Readonly": 4, "MultiAttach": 5},
    "MediumVariant": {"Standard": 0, "Fixed": 65536, "Diff": 131072},
    "MediumState": {"NotCreated": 0, "Created": 1, "LockedRead": 2, "LockedWrite": 3,
                    "Inaccessible": 4, "Creating": 5, "Deleting": 6},
    "CleanupMode": {"UnregisterOnly": 1, "DetachAllReturnNone": 2,
                    "DetachAllReturnHardDisksOnly": 3, "Full": 4,
                    "DetachAllReturnHardDisksAndVMRemovable": 5},
    "ClipboardMode": {"Disabled": 0, "HostToGuest": 1, "GuestToHost": 2, "Bidirectional": 3},
    "DnDMode": {"Disabled": 0, "HostToGuest": 1, "GuestToHost": 2, "Bidirectional": 3},
    "NetworkAttachmentType": {"Null": 0, "NAT": 1, "Bridged": 2, "Internal": 3,
                              "HostOnly": 4, "Generic": 5, "NATNetwork": 6},
    "NATProtocol": {"UDP": 0, "TCP": 1},
    "PortMode": {"Disconnected": 0, "HostPipe": 1, "HostDevice": 2, "RawFile": 3, "TCP": 4},
    "StorageBus": {"Null": 0, "IDE": 1, "SATA": 2, "SCSI": 3, "Floppy": 4, "SAS": 5,
                   "USB": 6, "PCIe": 7, "VirtioSCSI": 8},
    "StorageControllerType": {"IntelAhci": 3},
    "ProcessorFeature": {"HWVirtEx": 0, "PAE": 1, "LongMode": 2, "NestedPaging": 3},
    "PlatformArchitecture": {"None": 0, "x86": 1, "ARM": 2},
    "FirmwareType": {"BIOS": 1, "EFI": 2},
    "UartType": {"U16450": 0, "U16550A": 1, "U16750": 2},
}

# COM/XPCOM result codes (unsigned); the fake raises them signed, as XPCOM's Python binding does.
RESULTS: dict[str, int] = {
    "VBOX_E_OBJECT_NOT_FOUND": 0x80BB0001,
    "VBOX_E_INVALID_VM_STATE": 0x80BB0002,
    "VBOX_E_VM_ERROR": 0x80BB0003,
    "VBOX_E_FILE_ERROR": 0x80BB0004,
    "VBOX_E_IPRT_ERROR": 0x80BB0005,
    "VBOX_E_INVALID_OBJECT_STATE": 0x80BB0007,
    "VBOX_E_HOST_ERROR": 0x80BB0008,
    "VBOX_E_NOT_SUPPORTED": 0x80BB0009,
    "VBOX_E_INVALID_SESSION_STATE": 0x80BB000B,
    "VBOX_E_OBJECT_IN_USE": 0x80BB000C,
}
# Standard COM codes (VBox/com/defs.h; XPCOM's NS_ERROR_* have the same values).
COM_RESULTS: dict[str, int] = {
    "E_ACCESSDENIED": 0x80070005,
    "E_INVALIDARG": 0x80070057,
    "E_FAIL": 0x80004005,
    "NS_ERROR_CALL_FAILED": 0x800706BE,
    "NS_ERROR_ABORT": 0x80004004,
}


class FakeConstants:
    """Like vboxapi's VirtualBoxReflectionInfo (the non-symbolic, COM/XPCOM style)."""

    def __init__(self) -> None:
        flat = {f"{e}_{k}": v for e, vals in ENUMS.items() for k, v in vals.items()}
        flat.update(RESULTS)
        self._flat = flat

    def __getattr__(self, name: str) -> int:
        try:
            return self._flat[name]
        except KeyError:
            raise AttributeError(name) from None

    def all_values(self, enum: str) -> dict[str, int]:
        return dict(ENUMS.get(enum, {}))


def signed(code: int) -> int:
    """An HRESULT as XPCOM's Python binding reports it (a signed 32-bit int)."""
    return code - (1 << 32) if code & 0x80000000 else code
