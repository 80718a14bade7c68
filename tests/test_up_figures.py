"""bench/engine.py's figures of a real `pulumi up`, which the mission records in the README: a step's duration
from the engine's events, and a replaced resource's creation counted (not only its last, near-instant step)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.engine import step_durations

URN = "urn:pulumi:cluster::kubeadm-libvirt::kubeadm-libvirt:index:KubeadmCluster$command:remote:Command::"


def _pre(name: str, at: int) -> SimpleNamespace:
    return SimpleNamespace(timestamp=at, resource_pre_event=SimpleNamespace(metadata=SimpleNamespace(urn=URN + name)), res_outputs_event=None, res_op_failed_event=None)


def _done(name: str, at: int, failed: bool = False) -> SimpleNamespace:
    outcome = SimpleNamespace(metadata=SimpleNamespace(urn=URN + name))
    return SimpleNamespace(timestamp=at, resource_pre_event=None, res_outputs_event=None if failed else outcome, res_op_failed_event=outcome if failed else None)


def test_a_created_step_lasts_from_its_start_to_its_outcome() -> None:
    events = [_pre("lab-w1-os-prep", 100), _pre("lab-cp-os-prep", 101), _done("lab-cp-os-prep", 113), _done("lab-w1-os-prep", 117)]
    assert step_durations(events) == {"lab-w1-os-prep": 17, "lab-cp-os-prep": 12}


def test_a_replaced_step_counts_its_creation_and_its_delete() -> None:
    # The engine's order for a replacement: create the new one, replace (instant), later delete the replaced one.
    events = [
        _pre("lab-w1-container-runtime", 0),
        _done("lab-w1-container-runtime", 180),
        _pre("lab-w1-container-runtime", 180),
        _done("lab-w1-container-runtime", 180),
        _pre("lab-w1-container-runtime", 900),
        _done("lab-w1-container-runtime", 905),
    ]
    assert step_durations(events) == {"lab-w1-container-runtime": 185}


def test_a_failed_step_lasts_until_its_failure_and_an_unfinished_one_is_left_out() -> None:
    events = [_pre("lab-w1-kubeadm-join", 10), _done("lab-w1-kubeadm-join", 70, failed=True), _pre("lab-cp-smoke-test", 20)]
    assert step_durations(events) == {"lab-w1-kubeadm-join": 60}
