"""Version matrices and package sources: the facts that change with upstream releases, kept as data in one place.

Sources: shared/notes/kubernetes-on-ubuntu-18.04.md (sections 1, 3, 5 and 8).
"""

from __future__ import annotations

import re

# kubeadm's v1beta4 config API (used for every rendered config) exists from 1.31.
SUPPORTED_KUBERNETES_MINORS = (31, 37)
DEFAULT_MINOR = 34
# Ubuntu 18.04 has cgroup v1 only. From 1.35 the kubelet refuses cgroup v1 unless failCgroupV1 is false;
# from 1.36 Kubernetes needs containerd 2, which Docker's bionic repository never shipped.
CGROUP_V1_LAST_SAFE_MINOR = 34
CGROUP_V1_LAST_MINOR_WITH_CONTAINERD_1 = 35
CGROUP_V1_IMAGE = re.compile(r"bionic|18\.04|focal|20\.04", re.IGNORECASE)

# Calico minor -> the Kubernetes minors it is tested with (Tigera's per-release requirements pages).
CALICO_KUBERNETES_MINORS: dict[str, tuple[int, int]] = {
    "3.31": (32, 35),
    "3.32": (34, 36),
    "3.33": (35, 37),
}

# Calico's images come from one registry set explicitly in the Installation, so workers can prepull exactly
# those; quay.io has no Docker Hub pull limits. The images every node runs (DaemonSets):
CALICO_REGISTRY = "quay.io/"
CALICO_NODE_IMAGES = ("node", "cni", "pod2daemon-flexvol", "csi", "node-driver-registrar")

# Where packages and images come from. `china` is the tutorial's Aliyun setup, made current
# (kubernetes-new replaces the frozen kubernetes-xenial copy). Explicit keys override a profile entry.
# dockerAptMirror is the directory above Docker's per-distribution repositories: each node appends its
# /etc/os-release ID (ubuntu or debian), so one stack config serves both guest distributions.
MIRRORS: dict[str, dict[str, str]] = {
    "global": {
        "dockerAptMirror": "https://download.docker.com/linux",
        "kubernetesAptMirror": "https://pkgs.k8s.io/core:/stable:",
        "imageRepository": "registry.k8s.io",
        "calicoManifestUrl": "https://raw.githubusercontent.com/projectcalico/calico/v{calico_version}/manifests",
    },
    "china": {
        "dockerAptMirror": "https://mirrors.aliyun.com/docker-ce/linux",
        "kubernetesAptMirror": "https://mirrors.aliyun.com/kubernetes-new/core/stable",
        "imageRepository": "registry.aliyuncs.com/google_containers",
        "calicoManifestUrl": "https://raw.githubusercontent.com/projectcalico/calico/v{calico_version}/manifests",
    },
}

# The pause image tag kubeadm expects, per Kubernetes minor; containerd must use the same or kubeadm warns.
PAUSE_TAGS: dict[int, str] = {31: "3.10", 32: "3.10", 33: "3.10", 34: "3.10.1", 35: "3.10.1", 36: "3.10.1", 37: "3.10.1"}


def image_uses_cgroup_v1(image_url: str) -> bool:
    return bool(CGROUP_V1_IMAGE.search(image_url))


def calico_problem(calico_version: str, kubernetes_minor: int) -> str | None:
    match = re.fullmatch(r"(\d+\.\d+)\.\d+", calico_version or "")
    if not match:
        return "is not a Calico release version"
    supported = CALICO_KUBERNETES_MINORS.get(match.group(1))
    if supported is None:
        return f"is outside the supported Calico releases {', '.join(CALICO_KUBERNETES_MINORS)}"
    low, high = supported
    if not low <= kubernetes_minor <= high:
        return f"supports Kubernetes 1.{low}-1.{high}, not 1.{kubernetes_minor}"
    return None


def calico_fix(kubernetes_minor: int) -> str:
    fitting = [calico for calico, (low, high) in CALICO_KUBERNETES_MINORS.items() if low <= kubernetes_minor <= high]
    if not fitting:
        return "no supported Calico release fits this Kubernetes version"
    return f"use a {' or '.join(fitting)} release, e.g. {fitting[0]}.0 or newer patch"


def kubernetes_apt_repository(mirror_base: str, minor: str) -> str:
    """pkgs.k8s.io has one repository per minor: <base>/v1.34/deb/."""
    return f"{mirror_base}/v{minor}/deb/"


def calico_node_images(calico_version: str) -> tuple[str, ...]:
    return tuple(f"{CALICO_REGISTRY}calico/{image}:v{calico_version}" for image in CALICO_NODE_IMAGES)
