"""A worker's reset (reset-node.sh, the delete of its join step) as the dev stack sends it, against fakes for kubeadm,
iptables and ipvsadm: it empties the CNI configuration directory but keeps the directory itself, because containerd
watches that directory's inode and never sees a config written into a recreated one (containerd#6490): a node
joined again without a reboot would stay NotReady ("cni plugin not initialized"), as lab run 20 found.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from components.mockrun import StackRun
from tests.node_sandbox import install_fakes, run_sandboxed

WORKER = "kubernetes-slave1"
FAKES = {
    "kubeadm": '#!/bin/sh\necho "kubeadm $*" >>"$CALLS"\n',
    # No Kubernetes or Calico chains and no IPVS services: nothing of this machine's firewall is touched.
    **{name: '#!/bin/sh\necho "$0 $*" >>"$CALLS"\n' for name in ("iptables", "iptables-save", "ip6tables", "ip6tables-save", "ipvsadm")},
}


def reset(run: StackRun, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    install_fakes(tmp_path / "bin", FAKES)
    delete = run.named(f"{WORKER}-kubeadm-join").input("delete")
    return run_sandboxed(delete, tmp_path, tmp_path / "bin", {"CALLS": str(tmp_path / "calls"), "KUBE_USER": ""})


def test_the_cni_directory_is_emptied_not_removed(dev_run: StackRun, tmp_path: Path) -> None:
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/kubelet.conf").write_text("joined\n")
    net_d = tmp_path / "etc/cni/net.d"
    (net_d / "calico-kubeconfig.d").mkdir(parents=True)
    (net_d / "10-calico.conflist").write_text("{}\n")
    (net_d / "calico-kubeconfig").write_text("secret\n")
    inode = net_d.stat().st_ino

    done = reset(dev_run, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node reset: kubeadm reset, emptied {net_d}\n"
    assert net_d.is_dir() and net_d.stat().st_ino == inode
    assert list(net_d.iterdir()) == []
    assert "kubeadm reset -f" in (tmp_path / "calls").read_text()


def test_an_empty_or_missing_cni_directory_is_nothing_to_clean(dev_run: StackRun, tmp_path: Path) -> None:
    done = reset(dev_run, tmp_path)
    assert (done.returncode, done.stdout) == (0, "node reset: nothing to clean\n"), done.stderr
    (tmp_path / "etc/cni/net.d").mkdir(parents=True)
    done = reset(dev_run, tmp_path)
    assert (done.returncode, done.stdout) == (0, "node reset: nothing to clean\n"), done.stderr
    assert (tmp_path / "etc/cni/net.d").is_dir()
