"""A worker's join step (kubeadm-join.sh) as the dev stack sends it, against a fake kubeadm: a Ready Node of the
worker's name, which the cluster still lists for about a minute after this machine's earlier kubelet stopped (its VM
replaced while its disk survived, the replaced join's delete having reset it), is waited out and the join runs
again; one that stays Ready (another running machine under that name) fails the step with what to do; any other
failure is not retried.

The fake kubeadm refuses the first REFUSALS joins as kubeadm's kubelet-start phase does (after writing the CA and the
bootstrap kubeconfig), fails its preflight as kubeadm does when a join left those files behind, and records each
call; the fake sleep only records.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from components.mockrun import StackRun
from tests.node_sandbox import install_fakes, run_sandboxed

WORKER = "kubernetes-slave1"

FAKE_KUBEADM = """#!{python}
import os, sys
root, args = os.environ["ROOT"], sys.argv[1:]
pki = os.path.join(root, "etc/kubernetes/pki")
left = [os.path.join(root, "etc/kubernetes/bootstrap-kubelet.conf"), os.path.join(pki, "ca.crt")]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(args[0] + "\\n")
if args[0] == "join":
    if any(os.path.exists(f) for f in left):
        sys.exit("[preflight] Some fatal errors occurred: /etc/kubernetes/pki/ca.crt already exists")
    joins = sum(1 for line in open(os.environ["CALLS"]) if line == "join\\n")
    if os.environ["FAIL"] == "preflight":
        sys.exit("[preflight] Some fatal errors occurred: [ERROR FileContent--proc-sys-net-ipv4-ip_forward]")
    os.makedirs(pki, exist_ok=True)
    if joins <= int(os.environ["REFUSALS"]):
        for f in left:
            open(f, "w").close()
        sys.exit('error: error execution phase kubelet-start: a Node with name "{node}" and status "Ready" already '
                 'exists in the cluster. You must delete the existing Node or change the name of this new joining Node')
    open(os.path.join(root, "etc/kubernetes/kubelet.conf"), "w").close()
elif args[0] == "reset":
    for f in left:
        if os.path.exists(f):
            os.remove(f)
"""

FAKE_SLEEP = """#!/bin/sh
echo "sleep $*" >>"$CALLS"
"""


def join(run: StackRun, tmp_path: Path, refusals: int, fail: str = "", **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    install_fakes(tmp_path / "bin", {"kubeadm": FAKE_KUBEADM.format(python=sys.executable, node=WORKER), "sleep": FAKE_SLEEP})
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    calls = tmp_path / "calls"
    calls.touch()
    step = run.named(f"{WORKER}-kubeadm-join")
    done = run_sandboxed(
        step.input("create"),
        tmp_path,
        tmp_path / "bin",
        {"ROOT": str(tmp_path), "CALLS": str(calls), "REFUSALS": str(refusals), "FAIL": fail, **env},
        stdin=step.input("stdin") + "\n",
    )
    return done, [c for c in calls.read_text().splitlines() if c != "config"]


def test_a_ready_node_of_its_name_is_waited_out_and_the_join_runs_again(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = join(dev_run, tmp_path, refusals=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node {WORKER} joined\n"
    # Each refused join's CA and bootstrap kubeconfig are reset before the next, or kubeadm's preflight would stop it.
    assert calls == ["join", "sleep 10", "reset", "join", "sleep 10", "reset", "join"]
    assert done.stderr.count(f"the cluster still lists a Ready Node named {WORKER}") == 2
    assert (tmp_path / "etc/kubernetes/kubelet.conf").exists()


def test_a_ready_node_that_stays_fails_the_step_with_what_to_do(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = join(dev_run, tmp_path, refusals=99, STALE_NODE_WAIT_SECONDS="1")
    assert done.returncode == 1
    assert calls == ["join"]
    assert f"still lists a Ready Node named {WORKER} after 1s (STALE_NODE_WAIT_SECONDS)" in done.stderr
    assert "Give this worker another name, or remove that machine" in done.stderr
    assert not (tmp_path / "etc/kubernetes/kubelet.conf").exists()


def test_any_other_join_failure_is_not_retried(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = join(dev_run, tmp_path, refusals=0, fail="preflight")
    assert done.returncode == 1
    assert calls == ["join"]
    assert "kubeadm join failed (exit 1" in done.stderr and "ip_forward" in done.stderr


def test_a_bad_wait_is_refused_before_anything_runs(dev_run: StackRun, tmp_path: Path) -> None:
    done, calls = join(dev_run, tmp_path, refusals=0, STALE_NODE_WAIT_SECONDS="soon")
    assert done.returncode == 2
    assert "STALE_NODE_WAIT_SECONDS='soon': expected a whole number of seconds >= 1" in done.stderr
    assert calls == []
