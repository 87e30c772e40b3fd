"""Tests of merging user context data with job-side data, and of the public API surface."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from ctx_testdata import CREDENTIAL, ED25519_KEY, job_spec, user_doc

import contextualizer
from contextualizer import (
    ContextError,
    InputRef,
    Limits,
    Mode,
    NetworkPolicy,
    Payload,
    build_job_context,
    parse_user_context,
)


def test_merge_takes_user_and_job_parts() -> None:
    ctx = build_job_context(user_doc(), job_spec())
    assert ctx.job_uid == "2b6f1c9e-4a1d-4c55-9d0e-1f2a3b4c5d6e"
    assert (ctx.owner, ctx.app, ctx.mode) == ("alice", "root", Mode.SINGLE)
    assert ctx.credential == CREDENTIAL
    assert ctx.hostname == "alice-fit"
    assert ctx.network is NetworkPolicy.SERVER
    assert ctx.ssh_authorized_keys[0] == ED25519_KEY
    assert ctx.env["NEVENTS"] == "100000"
    assert [i.name for i in ctx.payload.inputs] == ["fit.C", "events.root", "calib.json"]
    assert ctx.format == 1


def test_merge_accepts_a_parsed_user_context() -> None:
    parsed = parse_user_context(user_doc())
    assert build_job_context(parsed, job_spec()) == build_job_context(user_doc(), job_spec())


def test_job_network_overrides_user_choice() -> None:
    assert build_job_context({"network": "internet"}, job_spec()).network is NetworkPolicy.INTERNET
    ctx = build_job_context({"network": "internet"}, job_spec(network=NetworkPolicy.NONE))
    assert ctx.network is NetworkPolicy.NONE
    assert build_job_context({}, job_spec()).network is NetworkPolicy.SERVER


def test_default_hostname_is_a_label_from_the_job_uid() -> None:
    ctx = build_job_context({}, job_spec(job_uid="Job_42.x"))
    assert ctx.hostname == "xwvm-job-42-x"
    long_uid = build_job_context({}, job_spec(job_uid="a" * 100)).hostname
    assert len(long_uid) == 63


def test_invalid_user_context_raises_context_error() -> None:
    with pytest.raises(ContextError) as err:
        build_job_context({"hostname": "bad_name", "colour": 1}, job_spec())
    assert [i.path for i in err.value.issues] == ["$.colour", "$.hostname"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"job_uid": ""}, "job_uid"),
        ({"job_uid": "a/b"}, "job_uid"),
        ({"credential": ""}, "credential is empty"),
        ({"server_url": "ftp://x"}, "server_url"),
        ({"mode": Mode.PILOT}, "idle_seconds"),
        ({"limits": Limits(0, 1, 1, 1)}, "positive"),
        ({"payload": Payload(command="")}, "payload.command"),
        ({"payload": Payload("root", inputs=(InputRef("d", "n", "xyz"),))}, "sha256"),
        ({"agent_command": ()}, "agent_command"),
    ],
)
def test_invalid_job_data_is_a_programming_error(overrides: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build_job_context({}, job_spec(**overrides))


def test_public_api() -> None:
    for name in contextualizer.__all__:
        assert hasattr(contextualizer, name), name
    assert set(contextualizer.SUPPORTED_FORMATS) == {1}
    assert contextualizer.DEFAULT_AGENT_COMMAND == (
        "/opt/xwvm/bin/xwvm-agent",
        "--context",
        "/run/xwvm/context.json",
    )


def test_every_module_says_what_it_owns() -> None:
    modules = [contextualizer] + [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(contextualizer.__path__, "contextualizer.")
    ]
    for module in modules:
        assert module.__doc__ and module.__doc__.split()[0] in {"Owns", "Holds"}, module.__name__
