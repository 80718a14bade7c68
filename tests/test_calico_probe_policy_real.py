"""calico.py's probe policy against the real API server: etcd and kube-apiserver of the lab mirror (built from
Go modules, lab/mirror.py), on 127.0.0.1, started with the kube-apiserver extraArgs the stack renders for a slow
host. A pod shaped as the tigera operator makes calico-node's must come back with the startup allowance and the
stretched timeouts; pods the policy does not match must come back as sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.calico import PROBE_POLICY, render_calico_installation
from components.kubeadm_config import render_kubeadm_config
from lab.errors import LabError
from lab.mirror import require_mirror
from tests.test_kubeadm_config_real import config_for

TOKEN = "probe-policy-test-token"
DEBIAN_12 = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"  # cgroup v2, 6.1
START_SECONDS = 120

# calico-node's container as tigera/operator v1.35 (Calico 3.28) renders it, probes read from the lab's live
# DaemonSet in run 11; image and the rest left out.
CALICO_NODE_PROBES = {
    "livenessProbe": {
        "httpGet": {"host": "localhost", "path": "/liveness", "port": 9099},
        "periodSeconds": 60,
        "failureThreshold": 3,
        "timeoutSeconds": 10,
    },
    "readinessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-ready"]}, "periodSeconds": 30, "timeoutSeconds": 10},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ApiServer:
    kubectl: Path
    url: str

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(self.kubectl), f"--server={self.url}", f"--token={TOKEN}", "--insecure-skip-tls-verify", *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


def api_server_args(rendered_kubeadm_config: str) -> list[str]:
    """The kube-apiserver flags the stack hands kubeadm (ClusterConfiguration apiServer.extraArgs)."""
    cluster = next(d for d in yaml.safe_load_all(rendered_kubeadm_config) if d["kind"] == "ClusterConfiguration")
    return [f"--{arg['name']}={arg['value']}" for arg in cluster["apiServer"].get("extraArgs", [])]


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def slow_host_config():
    return config_for(accelerator="tcg", timeoutScale="4")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, slow_host_config) -> Iterator[ApiServer]:
    try:
        bins = require_mirror().root / "bin"
    except LabError as error:
        pytest.fail(str(error))
    work = tmp_path_factory.mktemp("apiserver")
    subprocess.run(["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub")], check=True, capture_output=True)
    (work / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
    client, peer, secure = free_port(), free_port(), free_port()
    etcd = start(
        [
            str(bins / "etcd"), "--data-dir", str(work / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
        ],
        work / "etcd.log",
    )  # fmt: skip
    apiserver = start(
        [
            str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={secure}", f"--cert-dir={work / 'certs'}",
            "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={work / 'sa.pub'}",
            f"--service-account-signing-key-file={work / 'sa.key'}", f"--token-auth-file={work / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/12", "--endpoint-reconciler-type=none",
            *api_server_args(render_kubeadm_config(slow_host_config)),
        ],
        work / "kube-apiserver.log",
    )  # fmt: skip
    server = ApiServer(bins / "kubectl", f"https://127.0.0.1:{secure}")
    try:
        deadline = time.monotonic() + START_SECONDS
        while server.run("get", "--raw", "/readyz").returncode != 0:
            if apiserver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"kube-apiserver did not become ready:\n{(work / 'kube-apiserver.log').read_text()[-3000:]}")
            time.sleep(1)
        yield server
    finally:
        for process in (apiserver, etcd):
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture(scope="module")
def policy_applied(api_server: ApiServer, slow_host_config) -> ApiServer:
    documents = list(yaml.safe_load_all(render_calico_installation(slow_host_config)))
    admission = [d for d in documents if d["apiVersion"].startswith("admissionregistration.k8s.io/")]
    assert [d["kind"] for d in admission] == ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]
    api_server.ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": admission}))
    for namespace in ("calico-system", "elsewhere"):
        api_server.ok("create", "namespace", namespace)
        api_server.ok("create", "serviceaccount", "calico-node", "-n", namespace)
    return api_server


def pod(namespace: str, probes: dict) -> dict:
    container = {"name": "calico-node", "image": "calico/node:v3.28.1", **probes}
    spec = {"serviceAccountName": "calico-node", "containers": [container]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "calico-node-", "namespace": namespace}, "spec": spec}


def admitted(server: ApiServer, sent: dict) -> dict:
    """The pod as the API server stores it (a server-side dry run: admission and validation, nothing kept)."""
    return json.loads(server.ok("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(sent)))["spec"]["containers"][0]


def test_the_rendered_api_server_flags_serve_mutating_admission_policies(api_server: ApiServer) -> None:
    resources = api_server.ok("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name")
    assert "mutatingadmissionpolicies.admissionregistration.k8s.io" in resources.split()


def calico_node_once_in_force(server: ApiServer) -> dict:
    """calico-node's container as admitted once the API server's policy informer has seen the policy (bounded wait)."""
    deadline = time.monotonic() + 60
    while "startupProbe" not in (container := admitted(server, pod("calico-system", CALICO_NODE_PROBES))):
        assert time.monotonic() < deadline, f"{PROBE_POLICY} did not mutate the calico-node pod within 60 s: {container}"
        time.sleep(2)
    return container


def test_calico_node_gets_a_startup_allowance_and_stretched_timeouts(policy_applied: ApiServer) -> None:
    container = calico_node_once_in_force(policy_applied)
    startup, liveness, readiness = container["startupProbe"], container["livenessProbe"], container["readinessProbe"]
    # The liveness probe's own check, given 5 minutes x 4 (120 tries 10 s apart), each try 10 s x 4.
    assert startup["httpGet"] == {"host": "localhost", "path": "/liveness", "port": 9099, "scheme": "HTTP"}
    assert (startup["periodSeconds"], startup["failureThreshold"], startup["timeoutSeconds"]) == (10, 120, 40)
    assert startup["successThreshold"] == 1
    assert (liveness["periodSeconds"], liveness["failureThreshold"], liveness["timeoutSeconds"]) == (60, 3, 40)
    assert (readiness["periodSeconds"], readiness["timeoutSeconds"]) == (30, 40)
    assert readiness["exec"] == CALICO_NODE_PROBES["readinessProbe"]["exec"]


def test_pods_the_policy_does_not_match_are_admitted_as_sent(policy_applied: ApiServer) -> None:
    calico_node_once_in_force(policy_applied)
    elsewhere = admitted(policy_applied, pod("elsewhere", CALICO_NODE_PROBES))
    assert "startupProbe" not in elsewhere and elsewhere["livenessProbe"]["timeoutSeconds"] == 10
    without_liveness = admitted(policy_applied, pod("calico-system", {"readinessProbe": CALICO_NODE_PROBES["readinessProbe"]}))
    assert "startupProbe" not in without_liveness and without_liveness["readinessProbe"]["timeoutSeconds"] == 10
    own_startup = {**CALICO_NODE_PROBES, "startupProbe": {"tcpSocket": {"port": 9099}, "failureThreshold": 7}}
    kept = admitted(policy_applied, pod("calico-system", own_startup))
    assert kept["startupProbe"]["failureThreshold"] == 7 and kept["livenessProbe"]["timeoutSeconds"] == 10


@pytest.mark.parametrize(
    ("overrides", "api_version", "flags"),
    [
        ({"timeoutScale": "4", "kubernetesVersion": "1.33"}, None, []),
        ({"timeoutScale": "4", "kubernetesVersion": "1.35", "calicoVersion": "3.31.6"}, "admissionregistration.k8s.io/v1beta1", ["feature-gates", "runtime-config"]),
        ({"timeoutScale": "4", "kubernetesVersion": "1.36", "calicoVersion": "3.32.0", "allowUntestedCalico": True}, "admissionregistration.k8s.io/v1", []),
        ({"timeoutScale": "1", "kubernetesVersion": "1.35", "calicoVersion": "3.31.6"}, None, []),
    ],
    ids=["1.33 (alpha only): none", "1.35: beta, switched on", "1.36: GA", "timeoutScale 1: none"],
)
def test_the_policy_and_its_flags_follow_the_minor_and_the_scale(overrides: dict, api_version: str | None, flags: list[str]) -> None:
    config = config_for(accelerator="tcg", imageUrl=DEBIAN_12, **overrides)
    policies = [d for d in yaml.safe_load_all(render_calico_installation(config)) if d["kind"].startswith("MutatingAdmissionPolicy")]
    assert [d["apiVersion"] for d in policies] == ([api_version] * 2 if api_version else [])
    names = [flag.split("=", 1)[0].lstrip("-") for flag in api_server_args(render_kubeadm_config(config))]
    assert [name for name in names if name in ("feature-gates", "runtime-config")] == flags
