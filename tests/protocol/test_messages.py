"""The typed messages: round trips, missing and mistyped fields, a newer peer's keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xwvm.protocol import NetworkPolicy
from xwvm.protocol.messages import (
    HostFacts,
    HypervisorProbe,
    InputFile,
    JobDescription,
    SignedApp,
    SignedBinary,
    TemplateArtifact,
    TemplateDescription,
    VMCeilings,
    VMPart,
)

SHA = "a" * 64
ARTIFACT = TemplateArtifact(role="disk", format="qcow2", size=10, sha256=SHA,
                            path="/templates/t1/artifacts/disk?format=qcow2", virtual_size=20,
                            chunk_size=4, chunk_count=3)
TEMPLATE = TemplateDescription(uid="t1", name="base", version="1.0", os="linux",
                               arch="x86_64", manifest="{}", artifacts=(ARTIFACT,),
                               cmdline="console=ttyS0", min_memory_mb=512, min_cpus=1,
                               shared_apps=("python3",), status="published",
                               signatures=({"key_id": "k", "signature": "s"},))
NATIVE_JOB = JobDescription(
    uid="w1", args=("-v",), env={"A": "1"},
    files=(InputFile(role="input", name="in.txt", data="d1", sha256=SHA, size=3),),
    wall_clock_s=60, min_memory_mb=1, min_cpus=2, min_disk_mb=3, listen_port=8080,
    app="hello", signed_app=SignedApp(
        uid="a1", name="hello", kind="native",
        binaries=(SignedBinary(os="linux", arch="x86_64", sha256=SHA, size=3),),
        manifest="{}", signatures=({"key_id": "k", "signature": "s"},)))
VM_JOB = JobDescription(
    uid="w2", app="base", command="echo hi", files=NATIVE_JOB.files,
    vm=VMPart(template=TEMPLATE, owner="alice", delegated_token="secret-token",
              network=NetworkPolicy.NONE, pilot=True, pilot_idle_s=30,
              context={"version": 1}))
PROBE = HypervisorProbe(usable=True, reason="kvm works", accel="kvm", version="9.0",
                        networks=(NetworkPolicy.NONE, NetworkPolicy.SERVER),
                        limits=VMCeilings(1024, 2, 3000, 50))
NATIVE_PROBE = HypervisorProbe(usable=True, reason="sandboxed", app_keys=("k1",),
                               unsigned_apps=False)
HOST = HostFacts(name="h", os="linux", arch="x86_64", cpus=4, memory_mb=8192, disk_mb=100,
                 shared_apps=("python3",), hypervisors={"libvirt": PROBE,
                                                        "native": NATIVE_PROBE},
                 version="0.1", templates_held=("t1",), uid="h1")
EVERY = [(JobDescription, NATIVE_JOB), (JobDescription, VM_JOB),
         (TemplateDescription, TEMPLATE), (TemplateArtifact, ARTIFACT),
         (HostFacts, HOST), (HypervisorProbe, PROBE), (HypervisorProbe, NATIVE_PROBE),
         (InputFile, NATIVE_JOB.files[0]), (VMCeilings, VMCeilings(1, 2, 3))]


@pytest.mark.parametrize(("cls", "message"), EVERY)
def test_round_trip(cls: Any, message: Any) -> None:
    assert cls.from_json(message.to_json()) == message


@pytest.mark.parametrize(("cls", "message"), EVERY)
def test_a_newer_peers_keys_are_ignored(cls: Any, message: Any) -> None:
    assert cls.from_json({**message.to_json(), "from_the_future": [1, 2]}) == message


def test_the_vm_part_is_flat_on_the_wire() -> None:
    doc = VM_JOB.to_json()
    assert doc["network"] == "none" and doc["template"]["uid"] == "t1"
    assert doc["delegated_token"] == "secret-token" and doc["app"] == "base"
    assert "template" not in NATIVE_JOB.to_json()
    assert "command" not in NATIVE_JOB.to_json()


@pytest.mark.parametrize(("drop", "field"), [
    ("uid", "job.uid"), ("owner", "job.owner"), ("delegated_token", "job.delegated_token")])
def test_a_missing_required_field_is_named(drop: str, field: str) -> None:
    doc = VM_JOB.to_json()
    del doc[drop]
    with pytest.raises(ValueError, match=f"^{field}: missing"):
        JobDescription.from_json(doc)


def _with(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    at: Any = doc
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "field"), [
    (["uid"], 7, "job.uid"),
    (["args"], "not a list", "job.args"),
    (["args"], ["ok", 3], "job.args[1]"),
    (["env"], {"A": 1}, "job.env"),
    (["wall_clock_s"], True, "job.wall_clock_s"),
    (["files", 0, "size"], "3", "job.files[0].size"),
    (["files", 0], "x", "job.files[0]"),
    (["template", "artifacts", 0, "sha256"], None, "job.template.artifacts[0].sha256"),
    (["template", "artifacts"], {}, "job.template.artifacts"),
    (["network"], "everywhere", "job.network"),
    (["pilot"], "yes", "job.pilot"),
    (["context"], [], "job.context"),
])
def test_a_wrong_type_is_named_without_its_value(path: list[Any], value: Any,
                                                 field: str) -> None:
    doc = _with(VM_JOB.to_json(), path, value)
    with pytest.raises(ValueError) as e:
        JobDescription.from_json(doc)
    assert str(e.value).startswith(f"{field}:")
    assert "everywhere" not in str(e.value) and "secret-token" not in str(e.value)


def test_not_an_object_at_all() -> None:
    with pytest.raises(ValueError, match="^job: expected an object"):
        JobDescription.from_json(["w1"])


@pytest.mark.parametrize(("path", "value", "field"), [
    (["hypervisors", "libvirt", "usable"], "yes", "host.hypervisors.libvirt.usable"),
    (["hypervisors", "libvirt", "limits", "cpus"], 1.5,
     "host.hypervisors.libvirt.limits.cpus"),
    (["hypervisors", "native", "app_keys"], [1], "host.hypervisors.native.app_keys[0]"),
    (["cpus"], "4", "host.cpus"),
])
def test_a_malformed_probe_is_named(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(ValueError) as e:
        HostFacts.from_json(_with(HOST.to_json(), path, value))
    assert str(e.value).startswith(f"{field}:")


def test_an_odd_hypervisor_name_is_not_echoed() -> None:
    doc = {**HOST.to_json(), "hypervisors": {"<script>": {"usable": 1}}}
    with pytest.raises(ValueError, match=r"^host\.hypervisors\.\?\.usable:"):
        HostFacts.from_json(doc)


def test_a_probe_needs_only_usable_and_drops_unknown_networks() -> None:
    probe = HypervisorProbe.from_json({"usable": True, "networks": ["none", "mesh"]})
    assert probe == HypervisorProbe(usable=True, networks=(NetworkPolicy.NONE,))
    assert "limits" not in probe.to_json() and "app_keys" not in probe.to_json()


_text = st.text(max_size=12)
_files = st.builds(InputFile, role=st.sampled_from(["input", "stdin", "app"]), name=_text,
                   data=_text, sha256=_text, size=st.integers(0, 2**40))


@settings(max_examples=60, deadline=None)
@given(uid=_text, args=st.lists(_text, max_size=4).map(tuple),
       env=st.dictionaries(_text, _text, max_size=3),
       files=st.lists(_files, max_size=3).map(tuple),
       wall=st.none() | st.integers(1, 10**6), command=st.none() | _text,
       network=st.sampled_from(list(NetworkPolicy)), vm=st.booleans())
def test_any_job_description_round_trips(uid: str, args: tuple[str, ...],
                                         env: dict[str, str], files: tuple[InputFile, ...],
                                         wall: int | None, command: str | None,
                                         network: NetworkPolicy, vm: bool) -> None:
    part = VMPart(template=TEMPLATE, owner="o", delegated_token="t", network=network) \
        if vm else None
    job = JobDescription(uid=uid, args=args, env=env, files=files, wall_clock_s=wall,
                         command=command, vm=part)
    assert JobDescription.from_json(job.to_json()) == job
