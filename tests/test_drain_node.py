"""The membership's delete hook (drain-node.sh) as the dev stack sends it, against a fake kubectl: a worker that
stopped reporting (its VM destroyed or powered off) is drained without waiting for pods no kubelet will ever end,
a live one is drained as kubectl drains, waiting for its pods; a Node that does not exist is nothing to do.

The fake kubectl answers as the API server does for a Node whose Ready condition is READY, and records each call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.mockrun import StackRun
from tests.node_sandbox import install_fakes, run_sandboxed

MASTER = "kubernetes-master"
WORKER = "kubernetes-slave1"
SKIP_WAIT = "--skip-wait-for-delete-timeout=1"

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
        print(os.environ["READY"], end="")
    else:
        print("node/" + args[2])
"""


def drain(run: StackRun, tmp_path: Path, ready: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    install_fakes(tmp_path / "bin", {"kubectl": FAKE_KUBECTL.format(python=sys.executable)})
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/admin.conf").write_text("fake admin kubeconfig\n")
    calls = tmp_path / "calls"
    delete = run.named(f"{MASTER}-{WORKER}-membership").input("delete")
    done = run_sandboxed(delete, tmp_path, tmp_path / "bin", {"CALLS": str(calls), "READY": ready})
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
