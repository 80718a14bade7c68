"""The membership's delete hook (drain-node.sh) as the dev stack sends it, against a fake kubectl: a worker that
stopped reporting (its VM destroyed or powered off) is drained without waiting for pods no kubelet will ever end,
a live one is drained as kubectl drains, waiting for its pods; a Node that another VM joined since (the worker's VM
was replaced) is left alone; a Node that does not exist is nothing to do.

The fake kubectl answers as the API server does for a Node whose kubelet reports SYSTEM_UUID and whose Ready
condition is READY, and records each call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.mockrun import StackRun, mock_domain_uuid
from tests.node_sandbox import install_fakes, run_sandboxed

MASTER = "kubernetes-master"
WORKER = "kubernetes-slave1"
SKIP_WAIT = "--skip-wait-for-delete-timeout=1"
OWN_VM = mock_domain_uuid(f"{WORKER}-domain")  # what the dev stack's hook was rendered with

FAKE_KUBECTL = """#!{python}
import os, sys
args = sys.argv[1:]
if "--kubeconfig" in args:
    del args[args.index("--kubeconfig"):args.index("--kubeconfig") + 2]
args = [a for a in args if not a.startswith("--request-timeout")]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(" ".join(args) + "\\n")
if args[:2] == ["get", "node"]:
    if os.environ["READY"] == "absent":
        sys.exit('Error from server (NotFound): nodes "' + args[2] + '" not found')
    if "-o" in args and args[args.index("-o") + 1].startswith("jsonpath="):
        print(os.environ["SYSTEM_UUID"] + "|" + os.environ["READY"], end="")
    else:
        print("node/" + args[2])
"""


def drain(run: StackRun, tmp_path: Path, ready: str, system_uuid: str = OWN_VM) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    install_fakes(tmp_path / "bin", {"kubectl": FAKE_KUBECTL.format(python=sys.executable)})
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/admin.conf").write_text("fake admin kubeconfig\n")
    calls = tmp_path / "calls"
    delete = run.named(f"{MASTER}-{WORKER}-membership").input("delete")
    done = run_sandboxed(delete, tmp_path, tmp_path / "bin", {"CALLS": str(calls), "READY": ready, "SYSTEM_UUID": system_uuid})
    return done, calls.read_text().splitlines()


def drain_call(calls: list[str]) -> str:
    (call,) = [c for c in calls if c.startswith("drain ")]
    return call


def test_an_unreachable_worker_is_drained_without_waiting_for_its_pods(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = drain(dev_run, tmp_path, "Unknown")
    assert done.returncode == 0, done.stderr
    assert SKIP_WAIT in drain_call(calls).split()
    assert f"node {WORKER} is unreachable (Ready=Unknown)" in done.stderr
    assert f"delete node {WORKER} --ignore-not-found" in calls
    assert done.stdout.strip() == f"node {WORKER}: drained and deleted"


@pytest.mark.parametrize("ready", ["True", "False"])
def test_a_reporting_worker_is_drained_waiting_for_its_pods(dev_run: StackRun, tmp_path: Path, ready: str) -> None:
    """False is a kubelet that reports (its CNI not ready, say): it still ends its pods, so the drain waits."""
    done, calls = drain(dev_run, tmp_path, ready)
    assert done.returncode == 0, done.stderr
    call = drain_call(calls).split()
    assert SKIP_WAIT not in call and "--ignore-daemonsets" in call and any(a.startswith("--timeout=") for a in call)
    assert "unreachable" not in done.stderr
    assert f"delete node {WORKER} --ignore-not-found" in calls


def test_a_worker_without_a_node_object_is_nothing_to_do(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = drain(dev_run, tmp_path, "absent")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"node {WORKER}: not found, nothing removed"
    assert [c for c in calls if c.startswith(("drain ", "delete "))] == []


def test_a_node_another_vm_has_joined_since_is_left_in_the_cluster(dev_run: StackRun, tmp_path: Path) -> None:
    """The worker's domain was recreated (lost, refreshed away, created again) and the new VM joined under the same
    name before the old membership's hook ran: that Node is the new VM's, Ready, and stays."""
    new_vm = "6f1c2b1e-0d7a-4c44-9a1e-3b2f5c7d9e01"
    done, calls = drain(dev_run, tmp_path, "True", system_uuid=new_vm.upper())  # kubelets may report it in capitals
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if c.startswith(("drain ", "delete "))] == []
    assert f"node {WORKER} now runs on another VM (system UUID {new_vm.upper()}, not this membership's {OWN_VM})" in done.stderr
    assert done.stdout.strip() == f"node {WORKER}: another VM joined under this name, not removed"
    # Its own VM, in whatever case the kubelet reports it, is drained.
    done, calls = drain(dev_run, tmp_path / "own", "True", system_uuid=OWN_VM.upper())
    assert done.returncode == 0 and len([c for c in calls if c.startswith("drain ")]) == 1, done.stderr
