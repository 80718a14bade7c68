"""The images the cluster pulls: kubeadm's tags per release (components/versions.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from components import versions
from components.images import cluster_images, kubeadm_images
from components.project_files import PROJECT_ROOT
from components.validation import RawConfig, parse_cluster_config
from lab.toolchain import load_pins
from tests.test_config_validation import dev_values


def test_every_supported_minor_has_tags_read_from_a_release() -> None:
    low, high = versions.SUPPORTED_KUBERNETES_MINORS
    assert sorted(versions.KUBEADM_IMAGE_TAGS) == list(range(low, high + 1))


def test_a_patch_is_known_only_when_read_or_between_two_equal_reads() -> None:
    assert versions.kubeadm_image_tags(34, 4) == versions.KubeadmImageTags("v1.12.1", "3.10.1", "3.6.5-0")
    assert versions.kubeadm_image_tags(34, 0).etcd == "3.6.4-0"
    assert versions.kubeadm_image_tags(34, 1) is None  # between 3.6.4-0 and 3.6.5-0: either could be right
    assert versions.kubeadm_image_tags(33, 9) == versions.kubeadm_image_tags(33, 13)  # 1.33.6 and 1.33.13 agree
    assert versions.kubeadm_image_tags(34, 5) is None  # newer than any read: a patch may bump etcd
    assert versions.known_patches(34) == "1.34.0, 1.34.2-1.34.4"


def test_the_sandbox_image_follows_the_minor() -> None:
    assert [versions.pause_tag(minor) for minor in (31, 34, 35, 36, 37)] == ["3.10", "3.10.1", "3.10.1", "3.10.2", "3.10.2"]


# --- the image list (python -m components.images) --------------------------------------------------


def run_images(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.images", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )


def config_for(**overrides: object):
    return parse_cluster_config(RawConfig(dev_values(**overrides)))


def real_kubeadm_images(kubeadm: Path, version: str, repository: str) -> list[str]:
    """What the real kubeadm names: the lab's build of the pinned v1.34 (tests/conftest.py, built_kubeadm). This
    comparison keeps the tag table in components/versions.py honest."""
    result = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", f"v{version}", "--image-repository", repository],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.split()


def test_kubeadm_images_equal_the_real_kubeadm_for_the_lab_pin(built_kubeadm: Path) -> None:
    version = load_pins()["mirror"]["kubernetes"]["version"].lstrip("v")
    for repository in ("192.168.150.1:5000/k8s", "registry.k8s.io"):
        images, problem = kubeadm_images(config_for(kubernetesVersion=version, imageRepository=repository).kubernetes)
        assert problem is None
        assert images == real_kubeadm_images(built_kubeadm, version, repository), repository


def test_the_whole_list_for_a_mirrored_stack() -> None:
    result = run_images(
        "--set", "kubernetesVersion=1.34.4", "--set", "imageRepository=192.168.150.1:5000/k8s",
        "--set", "calicoRegistry=192.168.150.1:5000", "--set", "smokeImage=192.168.150.1:5000/lab/nginx:1.22.1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "192.168.150.1:5000/k8s/kube-apiserver:v1.34.4",
        "192.168.150.1:5000/k8s/kube-controller-manager:v1.34.4",
        "192.168.150.1:5000/k8s/kube-scheduler:v1.34.4",
        "192.168.150.1:5000/k8s/kube-proxy:v1.34.4",
        "192.168.150.1:5000/k8s/coredns:v1.12.1",
        "192.168.150.1:5000/k8s/pause:3.10.1",
        "192.168.150.1:5000/k8s/etcd:3.6.5-0",
        "192.168.150.1:5000/tigera/operator:v1.40.13",
        *(f"192.168.150.1:5000/calico/{name}:v3.31.6" for name in ("typha", "kube-controllers", "apiserver", "node", "cni")),
        "192.168.150.1:5000/lab/nginx:1.22.1",
    ]


def test_without_calicos_api_server_neither_its_resource_nor_its_image_is_there() -> None:
    """calicoApiServer false (the lab's): no APIServer for the operator, so no calico/apiserver to pull or mirror."""
    import yaml

    from components.calico import render_calico_installation

    for setting, kinds in (("true", ["Installation", "APIServer"]), ("false", ["Installation"])):
        config = config_for(calicoApiServer=setting)
        assert [d["kind"] for d in yaml.safe_load_all(render_calico_installation(config))] == kinds
        assert ("quay.io/calico/apiserver:v3.31.6" in cluster_images(config).images) == (setting == "true")


def test_the_prepulled_and_sandbox_images_are_in_the_list() -> None:
    from components.steps import sandbox_image
    from components.versions import calico_node_images

    config = config_for(kubernetesVersion="1.34.4", calicoRegistry="192.168.150.1:5000")
    listed = cluster_images(config).images
    assert sandbox_image(config) in listed
    assert set(calico_node_images(config.kubernetes.calico_registry, config.kubernetes.calico_version)) <= set(listed)


def test_a_version_without_known_tags_exits_2_naming_the_key_and_the_fix() -> None:
    for version, message in (("1.34", "kubernetesVersion: '1.34' names no patch"), ("1.34.1", "known: 1.34.0, 1.34.2-1.34.4")):
        result = run_images("--set", f"kubernetesVersion={version}")
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert message in result.stderr and "fix: pin" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_and_arguments_exit_2_as_in_the_plan() -> None:
    result = run_images("--set", "vcpus=1")
    assert result.returncode == 2 and "vcpus: 1 is below 2" in result.stderr and "Traceback" not in result.stderr
    result = run_images("--stack", "nosuchstack")
    assert result.returncode == 2 and "there is no Pulumi.nosuchstack.yaml" in result.stderr


def test_the_plan_shows_the_list_and_marks_what_it_cannot_name() -> None:
    from components.mockrun import run_program
    from components.plan import load_config, render_plan

    plan = render_plan(run_program("dev"), "dev", cluster_images(load_config("dev", {})))
    section = plan.split("images (python -m components.images --stack dev):\n", 1)[1].splitlines()
    assert section[0] == "  quay.io/tigera/operator:v1.40.13"
    assert section[-1].startswith("  # not named: kubernetesVersion: '1.34' names no patch")
