"""The air-gap source keys reach the nodes: what each step is sent for a lab-like stack (local mirrors)."""

from __future__ import annotations

import yaml

from components import yaml_io
from components.plan import split_invocation
from components import steps
from components.steps import node_commands
from components.validation import RawConfig, parse_cluster_config
from tests.test_config_validation import dev_values

DEBIAN_12 = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
LAB = {
    "imageUrl": DEBIAN_12,
    "kubernetesVersion": "1.34.4",
    "osAptSources": ["deb [signed-by=/etc/apt/keyrings/kubeadm-libvirt-os.gpg] http://192.168.150.1:8080/debian bookworm main"],
    "osAptKeyUrl": "http://192.168.150.1:8080/debian/archive.key",
    "containerRuntimeSource": "os-archive",
    "registries": [{"host": "192.168.150.1:5000", "plainHttp": True}],
    "calicoRegistry": "192.168.150.1:5000",
    "imageRepository": "192.168.150.1:5000/k8s",
}


def lab_config(**changes: object):
    return parse_cluster_config(RawConfig(dev_values(**{**LAB, **changes})))


def step_env(command: str, step: str) -> dict[str, str]:
    return next(env for name, env, _ in split_invocation(command) if name == step)


def test_calico_registry_moves_the_installation_the_operator_and_the_prepulls() -> None:
    config = lab_config()
    env = step_env(steps.calico(config), "calico")
    installation = next(yaml.safe_load_all(env["CALICO_INSTALLATION"]))
    assert installation["kind"] == "Installation" and installation["spec"]["registry"] == "192.168.150.1:5000/"
    kustomization = yaml_io.load(env["CALICO_OPERATOR_KUSTOMIZATION"])
    assert kustomization["resources"] == ["tigera-operator.yaml"]
    assert kustomization["images"] == [{"name": "quay.io/tigera/operator", "newName": "192.168.150.1:5000/tigera/operator"}]
    assert env["CALICO_OPERATOR_IMAGE"] == "192.168.150.1:5000/tigera/operator"
    prepull = step_env(node_commands(config).prepull_images, "prepull-images")["EXTRA_IMAGES"].split()
    assert prepull and all(image.startswith("192.168.150.1:5000/calico/") and image.endswith(":v3.31.6") for image in prepull)
