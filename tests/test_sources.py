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


def decode_records(text: str) -> dict[str, str]:
    import base64

    return {line.split("\t")[0]: base64.b64decode(line.split("\t")[1]).decode() for line in text.splitlines()}


def test_private_registries_reach_containerd_and_docker(ca_certificate: str) -> None:
    import json
    import tomllib

    config = lab_config(
        registries=[{"host": "192.168.150.1:5000", "plainHttp": True}, {"host": "registry.lab:5443", "caCert": ca_certificate}],
        registryMirrors=["https://mirror.lab"],
    )
    env = step_env(node_commands(config).container_runtime, "configure-container-runtime")
    hosts = {registry: tomllib.loads(text) for registry, text in decode_records(env["CONTAINERD_REGISTRY_HOSTS"]).items()}
    assert hosts == {
        "docker.io": {"server": "https://registry-1.docker.io", "host": {"https://mirror.lab": {"capabilities": ["pull", "resolve"]}}},
        # The server again as a [host] entry: Debian 12's containerd 1.6 resolves a plain-HTTP `server` alone over
        # HTTPS and fails (tests/test_cluster.py caught it pulling from the lab registry).
        "192.168.150.1:5000": {
            "server": "http://192.168.150.1:5000",
            "host": {"http://192.168.150.1:5000": {"capabilities": ["pull", "resolve"]}},
        },
        "registry.lab:5443": {
            "server": "https://registry.lab:5443",
            "host": {"https://registry.lab:5443": {"capabilities": ["pull", "resolve"], "ca": "/etc/containerd/certs.d/registry.lab:5443/ca.crt"}},
        },
    }
    assert decode_records(env["REGISTRY_CA_CERTS"]) == {"registry.lab:5443": ca_certificate.strip() + "\n"}
    daemon = json.loads(env["DOCKER_DAEMON_JSON"])
    assert daemon["insecure-registries"] == ["192.168.150.1:5000"] and daemon["registry-mirrors"] == ["https://mirror.lab"]


def test_the_default_stack_configures_no_registry() -> None:
    env = step_env(node_commands(lab_config(registries=[])).container_runtime, "configure-container-runtime")
    assert env["CONTAINERD_REGISTRY_HOSTS"] == "" and env["REGISTRY_CA_CERTS"] == ""
    assert "insecure-registries" not in env["DOCKER_DAEMON_JSON"]


def test_configure_container_runtime_refuses_bad_registry_records_before_changing_anything() -> None:
    import subprocess

    command = node_commands(lab_config()).container_runtime
    (_, env, script) = next(part for part in split_invocation(command) if part[0] == "configure-container-runtime")
    env = {**env, "REGISTRY_CA_CERTS": "registry.lab:5443\tbm90IGEgY2VydGlmaWNhdGU=\nbad host!\tAAAA"}
    result = subprocess.run(
        ["bash", "-c", script, "configure-container-runtime"], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "REGISTRY_CA_CERTS line 1: the ca.crt for 'registry.lab:5443' is not a PEM certificate" in result.stderr
    assert "REGISTRY_CA_CERTS line 2: registry 'bad host!' is not a host[:port] name" in result.stderr


def test_os_prep_applies_the_os_archive_first() -> None:
    config = lab_config()
    parts = split_invocation(node_commands(config).os_prep)
    assert [name for name, _, _ in parts] == ["os-apt-sources", "os-prep"]
    env = parts[0][1]
    assert env["OS_APT_SOURCES"] == LAB["osAptSources"][0] and env["OS_APT_KEY_URL"] == LAB["osAptKeyUrl"]


def test_os_apt_sources_refuses_bad_entries_before_changing_anything() -> None:
    import subprocess

    (_, env, script) = split_invocation(node_commands(lab_config()).os_prep)[0]
    env = {**env, "OS_APT_SOURCES": "deb http://192.168.150.1:8080/debian bookworm main\ndeb-src http://x.lab/debian bookworm main\ndeb [trusted=yes] bookworm main"}
    result = subprocess.run(["bash", "-c", script, "os-apt-sources"], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "OS_APT_SOURCES line 2: 'deb-src http://x.lab/debian bookworm main'" in result.stderr
    assert "OS_APT_SOURCES line 3: 'deb [trusted=yes] bookworm main'" in result.stderr
    assert "line 1" not in result.stderr


def test_os_archive_sends_only_its_own_inputs_and_the_containerd_floor() -> None:
    env = step_env(node_commands(lab_config()).container_runtime, "install-container-runtime")
    assert {key: value for key, value in env.items() if key != "APT_LOCK_TIMEOUT_SECONDS"} == {
        "CONTAINER_RUNTIME_SOURCE": "os-archive", "CONTAINERD_MIN_VERSION": "1.6", "TIMEOUT_SCALE_PERCENT": "100",
    }  # fmt: skip
    noble = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
    newer = lab_config(imageUrl=noble, kubernetesVersion="1.36.3", calicoVersion="3.32.0")
    assert step_env(node_commands(newer).container_runtime, "install-container-runtime")["CONTAINERD_MIN_VERSION"] == "2.0"
    default = step_env(node_commands(lab_config(containerRuntimeSource="docker-repo")).container_runtime, "install-container-runtime")
    assert default["CONTAINER_RUNTIME_SOURCE"] == "docker-repo" and default["CONTAINERD_VERSION"] == "1.6.21"


def test_install_container_runtime_refuses_an_unknown_source_before_changing_anything() -> None:
    import subprocess

    (_, env, script) = split_invocation(node_commands(lab_config()).container_runtime)[0]
    for bad, named in (({"CONTAINER_RUNTIME_SOURCE": "static"}, "CONTAINER_RUNTIME_SOURCE='static'"), ({"CONTAINERD_MIN_VERSION": "two"}, "CONTAINERD_MIN_VERSION='two'")):
        result = subprocess.run(
            ["bash", "-c", script, "install-container-runtime"], env={"PATH": "/usr/bin:/bin", **env, **bad}, capture_output=True, text=True
        )
        assert result.returncode == 2 and named in result.stderr, result.stderr
