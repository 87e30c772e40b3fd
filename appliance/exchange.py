"""The guest's side of the exchange disk: finding it among the VM's block devices.

The format itself (reading the inputs, writing the verdict) is the protocol's
(xwvm.protocol.exchange), shared with the outer worker that wrote the disk.
"""

from __future__ import annotations

from pathlib import Path

from xwvm.protocol.exchange import HEADER_SIZE, MAGIC, ExchangeError, read_header


def find_device(job_uid: str, sys_block: Path = Path("/sys/class/block"),
                dev: Path = Path("/dev")) -> Path:
    """The block device holding this job's exchange disk (whole disks only)."""
    seen = []
    for entry in sorted(sys_block.glob("*")):
        if (entry / "partition").exists() or not entry.name.startswith(("vd", "sd", "xvd")):
            continue
        device = dev / entry.name
        try:
            with device.open("rb") as f:
                doc = read_header(f, 0, HEADER_SIZE, MAGIC)
        except (OSError, ExchangeError):
            continue
        if doc is not None:
            if doc.get("job") == job_uid:
                return device
            seen.append(f"{device} (job {doc.get('job')})")
    raise ExchangeError("no exchange disk for job " + job_uid +
                        (f"; found {', '.join(seen)}" if seen else ""))
