"""The rendered kubeadm configuration against the real kubeadm: `kubeadm config validate` of the built v1.34 binary
(lab/mirror.py) must accept every document the stack hands to `kubeadm init` and `kubeadm join`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components.kubeadm_config import (
    CA_CERT_HASH_PLACEHOLDER,
    JOIN_TOKEN_PLACEHOLDER,
    PATCHES_DIR,
    kubeadm_documents,
    render_join_configuration,
    render_kubeadm_config,
    render_static_pod_patches,
)
from components.mockrun import run_program
from components.project_files import merged_config
from components.validation import RawConfig, parse_cluster_config
from lab.toolchain import load_pins
from tests.node_sandbox import install_fakes, run_sandboxed

PINNED = load_pins()["mirror"]["kubernetes"]["version"].lstrip("v")
# What kubeadm-join.sh puts in place of the placeholders on the node: a token and a CA hash of the right shape.
TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "0" * 64


def config_for(**overrides: object):
    merged = merged_config("dev", {"kubernetesVersion": PINNED, **overrides})
    values = {key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("kubeadm-libvirt:")}
    return parse_cluster_config(RawConfig(values))


def validate(kubeadm: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "kubeadm.yaml"
    path.write_text(text)
    return subprocess.run([str(kubeadm), "config", "validate", "--config", str(path)], capture_output=True, text=True)


VARIANTS = {
    "dev stack": {},
    "iptables proxy": {"kubeProxyMode": "iptables"},
    "tcg, timeouts x4": {"accelerator": "tcg", "timeoutScale": "4"},
    "single node (schedulable control plane)": {"nodes": [{"name": "solo", "role": "control-plane", "ip": "192.168.141.130"}]},
    "china mirror": {"mirror": "china"},
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_kubeadm_accepts_the_init_configuration(built_kubeadm: Path, tmp_path: Path, overrides: dict) -> None:
    done = validate(built_kubeadm, render_kubeadm_config(config_for(**overrides)), tmp_path)
    assert done.returncode == 0, f"kubeadm {PINNED} rejects the init configuration: {done.stderr}"
    assert "ok" in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_kubeadm_accepts_the_join_configuration(built_kubeadm: Path, tmp_path: Path, overrides: dict) -> None:
    config = config_for(**overrides)
    for worker in config.workers:
        text = render_join_configuration(config, worker)
        text = text.replace(JOIN_TOKEN_PLACEHOLDER, TOKEN).replace(CA_CERT_HASH_PLACEHOLDER, CA_HASH)
        done = validate(built_kubeadm, text, tmp_path)
        assert done.returncode == 0, f"kubeadm {PINNED} rejects {worker.name}'s join configuration: {done.stderr}"


def test_control_plane_timing_stretches_with_timeout_scale_and_is_left_at_its_defaults_otherwise() -> None:
    scaled = kubeadm_documents(config_for(accelerator="tcg", timeoutScale="4"))[1]
    leader_election = [
        {"name": "leader-elect-lease-duration", "value": "1m"},
        {"name": "leader-elect-renew-deadline", "value": "40s"},
        {"name": "leader-elect-retry-period", "value": "8s"},
    ]
    assert scaled["controllerManager"] == scaled["scheduler"] == {"extraArgs": leader_election}
    assert scaled["apiServer"]["extraArgs"] == [
        {"name": "request-timeout", "value": "4m"},
        {"name": "etcd-healthcheck-timeout", "value": "8s"},
        {"name": "etcd-readycheck-timeout", "value": "8s"},
        # What 1.34's API server needs to serve calico.py's probe policy (tests/test_calico_probe_policy_real.py).
        {"name": "feature-gates", "value": "MutatingAdmissionPolicy=true"},
        {"name": "runtime-config", "value": "admissionregistration.k8s.io/v1beta1=true"},
    ]
    assert scaled["etcd"] == {"local": {"extraArgs": [{"name": "heartbeat-interval", "value": "400"}, {"name": "election-timeout", "value": "4000"}]}}
    default = kubeadm_documents(config_for())[1]
    assert not {"controllerManager", "scheduler", "etcd"} & default.keys()
    assert "extraArgs" not in default["apiServer"]


def test_the_kubelets_runtime_calls_get_longer_with_timeout_scale() -> None:
    """Every node's kubelet (the KubeletConfiguration kubeadm uploads at init) waits 2 min x timeoutScale for a
    runtime call such as a pod sandbox's creation; at 1 the kubelet's default stays."""
    assert kubeadm_documents(config_for(accelerator="tcg", timeoutScale="4"))[2]["runtimeRequestTimeout"] == "8m"
    assert kubeadm_documents(config_for(accelerator="tcg", timeoutScale="1.5"))[2]["runtimeRequestTimeout"] == "3m"
    assert "runtimeRequestTimeout" not in kubeadm_documents(config_for())[2]


def test_the_check_can_fail(built_kubeadm: Path, tmp_path: Path) -> None:
    """The validator is real: a field kubeadm does not know is refused, naming it."""
    text = render_kubeadm_config(config_for()).replace("kind: ClusterConfiguration", "kind: ClusterConfiguration\nnoSuchField: 1", 1)
    done = validate(built_kubeadm, text, tmp_path)
    assert done.returncode != 0
    assert "noSuchField" in done.stderr


def test_the_built_kubeadm_is_the_pinned_version(built_kubeadm: Path) -> None:
    done = subprocess.run([str(built_kubeadm), "version", "-o", "short"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"v{PINNED}"


# kubeadm-init.sh in a sandbox (tests/node_sandbox.py): a fake kubeadm that records `init` and leaves an admin.conf,
# a fake getent whose user's home is in the sandbox (owned by root, as id says); kubectl only has to exist.
FAKE_KUBEADM = """#!/bin/bash
case "$1 $2" in
  "version -o") echo v{version} ;;
  "init --config") cp "$3" "$SANDBOX/init-config.yaml"; mkdir -p "$SANDBOX/etc/kubernetes"; echo fake >"$SANDBOX/etc/kubernetes/admin.conf" ;;
esac
"""
FAKE_GETENT = '#!/bin/bash\necho "root:x:0:0:root:$SANDBOX/home:/bin/bash"\n'
INIT_FAKES = {"kubeadm": FAKE_KUBEADM.format(version=PINNED), "getent": FAKE_GETENT, "id": "#!/bin/sh\necho root\n", "kubectl": "#!/bin/true\n"}
# The control plane's static pods as kubeadm names their manifests (written out here, not taken from the code tested).
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def test_on_a_slow_host_kubeadm_init_runs_with_the_static_pods_probes_stretched(built_kubeadm: Path, tmp_path: Path) -> None:
    """What kubeadm-init.sh writes from KUBEADM_PATCHES is what the real kubeadm patches its static pods with: each
    liveness probe answers within 15 s x 4 and fails 8 x 4 times before a kill, its check and period as kubeadm's;
    etcd's, the API server's and the scheduler's readiness probes run every 4 s instead of every second."""
    run = run_program("dev", overrides={"kubeadm-libvirt:accelerator": "tcg", "kubeadm-libvirt:timeoutScale": "4", "kubeadm-libvirt:kubernetesVersion": PINNED})
    (tmp_path / "home").mkdir()
    install_fakes(tmp_path / "bin", INIT_FAKES)
    done = run_sandboxed(run.named("kubernetes-master-kubeadm-init").input("create"), tmp_path, tmp_path / "bin", {"SANDBOX": str(tmp_path), "KUBE_USER": "root"})
    assert done.returncode == 0, done.stderr
    written = tmp_path / PATCHES_DIR.replace("/etc/kubernetes", "etc/kubernetes")
    assert sorted(p.name for p in written.iterdir()) == [f"{pod}+strategic.yaml" for pod in STATIC_PODS]
    # The config kubeadm init got names that directory; the real kubeadm renders the static pods with what is in it.
    documents = list(yaml.safe_load_all((tmp_path / "init-config.yaml").read_text()))
    assert documents[0]["patches"] == {"directory": PATCHES_DIR}
    documents[0]["patches"]["directory"] = str(written)
    config = tmp_path / "dry-run.yaml"
    config.write_text(yaml.safe_dump_all(documents))
    out = tmp_path / "manifests"
    env = {**os.environ, "KUBEADM_INIT_DRYRUN_DIR": str(out)}  # kubeadm's dry run writes here, not under /etc
    for phase in (["control-plane", "all"], ["etcd", "local"]):
        dry = subprocess.run([str(built_kubeadm), "init", "phase", *phase, "--config", str(config), "--dry-run"], capture_output=True, text=True, env=env)
        assert dry.returncode == 0, dry.stderr
        assert "Applied patch of type" in dry.stdout + dry.stderr
    for pod in STATIC_PODS:
        (container,) = yaml.safe_load((out / f"{pod}.yaml").read_text())["spec"]["containers"]
        liveness = container["livenessProbe"]
        assert (liveness["timeoutSeconds"], liveness["failureThreshold"]) == (60, 32), pod
        assert (liveness["periodSeconds"], liveness["initialDelaySeconds"]) == (10, 10) and "httpGet" in liveness, pod
        # kubeadm's one-second readiness probes (etcd, API server, scheduler) run every timeoutScale seconds.
        readiness = container.get("readinessProbe")
        if pod != "kube-controller-manager":
            assert (readiness["periodSeconds"], readiness["timeoutSeconds"], readiness["failureThreshold"]) == (4, 15, 3), pod
            assert "httpGet" in readiness, pod
        else:
            assert readiness is None, pod


def test_a_patch_file_that_is_not_a_static_pods_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    install_fakes(tmp_path / "bin", INIT_FAKES)
    create = run_program("dev").named("kubernetes-master-kubeadm-init").input("create")
    bad = "# kubeadm patch: ../../../etc/cron.d/x\nspec: {}\n"
    done = run_sandboxed(create, tmp_path, tmp_path / "bin", {"SANDBOX": str(tmp_path), "KUBE_USER": "root", "KUBEADM_PATCHES": bad})
    assert done.returncode == 2
    assert "KUBEADM_PATCHES: '../../../etc/cron.d/x' is not a strategic-merge patch file of a control-plane static pod" in done.stderr
    assert not (tmp_path / "etc").exists()


def test_at_timeout_scale_1_kubeadm_gets_no_patches() -> None:
    assert render_static_pod_patches(config_for().timeouts) == ""
    assert "patches" not in kubeadm_documents(config_for())[0]
