"""Version matrices and package sources: the facts that change with upstream releases, kept as data in one place.

Sources: shared/notes/kubernetes-on-ubuntu-18.04.md (sections 1, 3, 5 and 8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# kubeadm's v1beta4 config API (used for every rendered config) exists from 1.31.
SUPPORTED_KUBERNETES_MINORS = (31, 37)
DEFAULT_MINOR = 34
# 1.35 is the last Kubernetes release that supports containerd 1.x (kubernetes-on-ubuntu-18.04.md section 2).
LAST_MINOR_WITH_CONTAINERD_1 = 35
# From 1.36 Kubernetes needs containerd 2, which Docker's bionic repository never shipped: no cgroup v1 image
# (Ubuntu 18.04/20.04) runs 1.36+, whatever kubeadm's preflight says.
CGROUP_V1_LAST_MINOR_WITH_CONTAINERD_1 = LAST_MINOR_WITH_CONTAINERD_1


@dataclass(frozen=True)
class SystemVerification:
    """kubeadm's SystemVerification preflight check of one minor, on Linux, as its source has it.

    kubeadm runs it in `kubeadm init` and in `kubeadm join` alike (addCommonChecks in
    cmd/kubeadm/app/preflight/checks.go), through the k8s.io/system-validators release it vendors: the kernel
    release must match one of KernelSpec.Versions (types_unix.go), an error or only a warning depending on the
    release (kernel_validator.go Validate); on cgroup v1 the cgroups validator warns, and from kubelet 1.35 fails
    (cgroup_validator_linux.go). An error stops init/join unless SystemVerification is in ignorePreflightErrors.
    """

    system_validators: str  # the k8s.io/system-validators version in that minor's go.mod
    kernel_versions: tuple[str, ...]  # KernelSpec.Versions, Go regular expressions matched against `uname -r`
    kernel_mismatch_is_error: bool
    cgroup_v1: Literal["ok", "warning", "error"]


# Read from k8s.io/kubernetes v1.31.14, v1.32.13, v1.33.13, v1.34.4, v1.35.4, v1.36.3, v1.37.2 (also v1.32.2,
# v1.33.6, v1.34.0: the same rules) and the system-validators releases their go.mod names.
_KERNEL_3_10 = (r"^3\.[1-9][0-9].*$", r"^([4-9]|[1-9][0-9]+)\.([0-9]+)\.([0-9]+).*$")
_KERNEL_4_19 = (r"^4\.19.*$", r"^4\.[2-9][0-9].*$", r"^([5-9]|[1-9][0-9]+)\.([0-9]+)\.([0-9]+).*$")
_KERNEL_5_4 = (r"^5\.4.*$", r"^5\.10.*$", r"^5\.15.*$", r"^([6-9]|[1-9][0-9]+)\.([0-9]+)\.([0-9]+).*$")
SYSTEM_VERIFICATION: dict[int, SystemVerification] = {
    31: SystemVerification("v1.8.0", _KERNEL_3_10, kernel_mismatch_is_error=True, cgroup_v1="ok"),
    32: SystemVerification("v1.9.2", _KERNEL_4_19, kernel_mismatch_is_error=True, cgroup_v1="warning"),
    33: SystemVerification("v1.9.2", _KERNEL_4_19, kernel_mismatch_is_error=True, cgroup_v1="warning"),
    34: SystemVerification("v1.10.2", _KERNEL_5_4, kernel_mismatch_is_error=False, cgroup_v1="warning"),
    35: SystemVerification("v1.12.1", _KERNEL_5_4, kernel_mismatch_is_error=False, cgroup_v1="error"),
    36: SystemVerification("v1.12.1", _KERNEL_5_4, kernel_mismatch_is_error=False, cgroup_v1="error"),
    37: SystemVerification("v1.12.1", _KERNEL_5_4, kernel_mismatch_is_error=False, cgroup_v1="error"),
}


@dataclass(frozen=True)
class ImageFacts:
    """What kubeadm's preflight sees on a known image: its stock kernel and its cgroup version."""

    name: str
    kernel: str  # `uname -r` of the image's stock (GA) kernel
    cgroup_v1: bool

    @property
    def kernel_short(self) -> str:
        return ".".join(self.kernel.split(".")[:2])


# Recognised by their name in imageUrl (URL or file name), first match wins. An image not recognised is taken to
# meet kubeadm's preflight (a current kernel, cgroup v2): kubeadm's own check still stops init/join if not.
KNOWN_IMAGES: tuple[tuple[re.Pattern[str], ImageFacts], ...] = (
    (re.compile(r"bionic|18\.04", re.IGNORECASE), ImageFacts("Ubuntu 18.04", "4.15.0-213-generic", cgroup_v1=True)),
    (re.compile(r"focal|20\.04", re.IGNORECASE), ImageFacts("Ubuntu 20.04", "5.4.0-200-generic", cgroup_v1=True)),
    (re.compile(r"jammy|22\.04", re.IGNORECASE), ImageFacts("Ubuntu 22.04", "5.15.0-125-generic", cgroup_v1=False)),
    (re.compile(r"noble|24\.04", re.IGNORECASE), ImageFacts("Ubuntu 24.04", "6.8.0-48-generic", cgroup_v1=False)),
    (re.compile(r"bookworm|debian-?12", re.IGNORECASE), ImageFacts("Debian 12", "6.1.0-27-amd64", cgroup_v1=False)),
)
# containerRuntimeSource os-archive: what the distribution archive carries (docker.io, containerd), by the
# ImageFacts name of the image (image_release). Debian 12:
# bookworm's Packages (containerd 1.6.20~ds1-1+deb12u3, docker.io 20.10.24+dfsg1-1+deb12u1+b6); Ubuntu 18.04:
# bionic-updates (containerd 1.6.12-0ubuntu1~18.04.1, docker.io 20.10.21-0ubuntu1~18.04.x). Other releases are
# checked on the node (install-container-runtime.sh refuses a containerd older than the minor needs).
OS_ARCHIVE_RUNTIME: dict[str, tuple[str, str]] = {
    "Ubuntu 18.04": ("20.10.21", "1.6.12"),
    "Debian 12": ("20.10.24", "1.6.20"),
}

# Calico minor -> the Kubernetes minors it is tested with (Tigera's per-release requirements pages). 3.28 fits none
# of the project's minors: it is listed because it is the Calico the offline lab can build from Go modules (the
# module proxy refuses tigera/operator's api module from operator v1.39 on), run under allowUntestedCalico.
CALICO_KUBERNETES_MINORS: dict[str, tuple[int, int]] = {
    "3.28": (27, 30),
    "3.31": (32, 35),
    "3.32": (34, 36),
    "3.33": (35, 37),
}

# How each minor's kube-apiserver serves MutatingAdmissionPolicy (KEP-3962): alpha in 1.32-1.33 (not used: an alpha
# API is not something to switch on in a cluster a user keeps), beta in 1.34-1.35, served only when its feature gate
# and its API version are switched on, GA (v1, on by default) from 1.36.
@dataclass(frozen=True)
class AdmissionPolicyApi:
    api_version: str
    api_server_args: tuple[tuple[str, str], ...]  # the kube-apiserver flags that make it served


MUTATING_ADMISSION_POLICY_BETA = AdmissionPolicyApi(
    "admissionregistration.k8s.io/v1beta1",
    (("feature-gates", "MutatingAdmissionPolicy=true"), ("runtime-config", "admissionregistration.k8s.io/v1beta1=true")),
)
MUTATING_ADMISSION_POLICY_GA = AdmissionPolicyApi("admissionregistration.k8s.io/v1", ())


def mutating_admission_policy_api(kubernetes_minor: int) -> AdmissionPolicyApi | None:
    if kubernetes_minor >= 36:
        return MUTATING_ADMISSION_POLICY_GA
    if kubernetes_minor >= 34:
        return MUTATING_ADMISSION_POLICY_BETA
    return None


# Calico's images come from one registry set explicitly in the Installation, so workers can prepull exactly
# those; quay.io has no Docker Hub pull limits. The images every node runs (DaemonSets):
CALICO_REGISTRY = "quay.io/"
# The Installation turns off the flexvolume driver and the CSI driver (calico.py), so the DaemonSets are calico-node
# (its install-cni init container runs the cni image) and nothing else.
CALICO_NODE_IMAGES = ("node", "cni")
# The operator's image in Calico's tigera-operator.yaml is quay.io/tigera/operator:<tag>: CALICO_REGISTRY + this.
CALICO_OPERATOR_IMAGE = "tigera/operator"
# What the operator deploys for the Installation calico.py renders, besides CALICO_NODE_IMAGES: Typha and
# kube-controllers (no Goldmane, Whisker or gateway resources, no certificate management); and for the APIServer,
# when calicoApiServer renders one, the API server.
CALICO_CLUSTER_IMAGES = ("typha", "kube-controllers")
CALICO_API_SERVER_IMAGE = "apiserver"
# Calico release -> the tigera/operator tag its tigera-operator.yaml pins: the operator release that says "released
# to support Calico version v3.31.N" (tigera/operator release notes: v1.40.12 for 3.31.5, v1.40.13 for 3.31.6,
# v1.40.15 for 3.31.7). Not read from the manifests themselves, which are not reachable here; calico.sh checks on
# the node that the manifest's operator image is the rewritten one, whatever its tag. 3.28.1: operator v1.35.0,
# whose own `operator --version` says "Calico: v3.28.1" (built in the lab).
CALICO_OPERATOR_TAGS: dict[str, str] = {"3.28.1": "v1.35.0", "3.31.5": "v1.40.12", "3.31.6": "v1.40.13", "3.31.7": "v1.40.15"}

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



@dataclass(frozen=True)
class KubeadmImageTags:
    """The image tags kubeadm of one release pulls besides its own version's (kube-apiserver etc. are v1.M.P):
    constants.go's CoreDNSVersion, PauseVersion and SupportedEtcdVersion[M] (kubeadm falls back to the nearest minor
    of that map when M is missing, as 1.37.2's lists only 34-36)."""

    coredns: str
    pause: str
    etcd: str


# Kubernetes minor -> {patch: tags of kubeadm 1.MINOR.PATCH}, read from cmd/kubeadm/app/constants/constants.go of
# k8s.io/kubernetes at exactly those patches (`go mod download -json k8s.io/kubernetes@v1.34.4`, the Go module proxy).
# Patch releases do change them: 1.31.0 pulls etcd 3.5.15-0 and CoreDNS v1.11.1, 1.31.14 etcd 3.5.24-0 and v1.11.3;
# 1.34.0 etcd 3.6.4-0, 1.34.2 3.6.5-0. So a patch is known only when it was read, or lies between two read patches
# with equal tags (nothing changed in between); any other patch is unknown (kubeadm_image_tags returns None) rather
# than guessed. To add a patch: read those three constants at its tag and add a row.
KUBEADM_IMAGE_TAGS: dict[int, dict[int, KubeadmImageTags]] = {
    31: {0: KubeadmImageTags("v1.11.1", "3.10", "3.5.15-0"), 14: KubeadmImageTags("v1.11.3", "3.10", "3.5.24-0")},
    32: {2: KubeadmImageTags("v1.11.3", "3.10", "3.5.16-0"), 13: KubeadmImageTags("v1.11.3", "3.10", "3.5.24-0")},
    33: {6: KubeadmImageTags("v1.12.0", "3.10", "3.5.24-0"), 13: KubeadmImageTags("v1.12.0", "3.10", "3.5.24-0")},
    34: {
        0: KubeadmImageTags("v1.12.1", "3.10.1", "3.6.4-0"),
        2: KubeadmImageTags("v1.12.1", "3.10.1", "3.6.5-0"),
        3: KubeadmImageTags("v1.12.1", "3.10.1", "3.6.5-0"),
        4: KubeadmImageTags("v1.12.1", "3.10.1", "3.6.5-0"),
    },
    35: {4: KubeadmImageTags("v1.13.1", "3.10.1", "3.6.6-0")},
    36: {0: KubeadmImageTags("v1.14.2", "3.10.2", "3.6.8-0"), 3: KubeadmImageTags("v1.14.2", "3.10.2", "3.6.8-0")},
    37: {2: KubeadmImageTags("v1.14.6", "3.10.2", "3.7.0-0")},
}


def kubeadm_image_tags(minor: int, patch: int) -> KubeadmImageTags | None:
    """The tags kubeadm 1.minor.patch pulls, or None when this table cannot tell (see KUBEADM_IMAGE_TAGS)."""
    read = KUBEADM_IMAGE_TAGS.get(minor, {})
    if patch in read:
        return read[patch]
    below = [p for p in read if p < patch]
    above = [p for p in read if p > patch]
    if below and above and read[max(below)] == read[min(above)]:
        return read[max(below)]
    return None


def known_patches(minor: int) -> str:
    """The patches of a minor whose tags are known, for messages: "1.34.0, 1.34.2-1.34.4"."""
    read = sorted(KUBEADM_IMAGE_TAGS.get(minor, {}))
    spans: list[list[int]] = []
    for patch in read:
        if spans and kubeadm_image_tags(minor, spans[-1][0]) == kubeadm_image_tags(minor, patch):
            spans[-1][1] = patch
        else:
            spans.append([patch, patch])
    return ", ".join(f"1.{minor}.{a}" if a == b else f"1.{minor}.{a}-1.{minor}.{b}" for a, b in spans)


def pause_tag(minor: int) -> str:
    """The pause tag for containerd's sandbox image: that of the newest patch read. It is the same for every patch
    read of each minor; were it to differ, kubeadm would only warn that the sandbox image is not the one it expects."""
    read = KUBEADM_IMAGE_TAGS[minor]
    return read[max(read)].pause


def image_facts(image_url: str) -> ImageFacts | None:
    return next((facts for pattern, facts in KNOWN_IMAGES if pattern.search(image_url)), None)


def image_uses_cgroup_v1(image_url: str) -> bool:
    facts = image_facts(image_url)
    return facts is not None and facts.cgroup_v1


def cgroup_v1_opt_in(allow_cgroup_v1: bool, minor: int) -> bool:
    """Whether allowCgroupV1 takes effect: in the minors whose kubelet refuses cgroup v1 by default (1.35+). Then
    the kubelet gets failCgroupV1: false, and init *and* join ignore SystemVerification, which fails there."""
    return allow_cgroup_v1 and SYSTEM_VERIFICATION[minor].cgroup_v1 == "error"


def system_verification_errors(minor: int, facts: ImageFacts) -> list[str]:
    """What kubeadm's SystemVerification reports as errors (not warnings) on this image, for init and join."""
    rules = SYSTEM_VERIFICATION[minor]
    errors = []
    if rules.kernel_mismatch_is_error and not any(re.search(pattern, facts.kernel) for pattern in rules.kernel_versions):
        errors.append(f"kernel release {facts.kernel} is unsupported")
    if facts.cgroup_v1 and rules.cgroup_v1 == "error":
        errors.append("cgroups v1 support is deprecated (the kubelet refuses cgroup v1 by default)")
    return errors


def image_release(image_url: str) -> str | None:
    """The image's distribution release, told from imageUrl by the same table as its kernel and cgroup version."""
    facts = image_facts(image_url)
    return facts.name if facts is not None else None


def minimum_containerd(kubernetes_minor: int) -> str:
    """The oldest containerd a Kubernetes minor runs with: 2.0 after the last minor with containerd 1.x support,
    else 1.6 (the oldest containerd with the CRI v1 API that the kubelet has required since 1.26)."""
    return "2.0" if kubernetes_minor > LAST_MINOR_WITH_CONTAINERD_1 else "1.6"


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


def calico_is_known(calico_version: str) -> bool:
    """A release of a Calico minor in CALICO_KUBERNETES_MINORS, whatever Kubernetes it runs with."""
    return re.fullmatch(r"(\d+\.\d+)\.\d+", calico_version or "") is not None and calico_version.rsplit(".", 1)[0] in CALICO_KUBERNETES_MINORS


def calico_releases_for(kubernetes_minor: int) -> list[str]:
    return [calico for calico, (low, high) in CALICO_KUBERNETES_MINORS.items() if low <= kubernetes_minor <= high]


def calico_fix(kubernetes_minor: int) -> str:
    fitting = calico_releases_for(kubernetes_minor)
    if not fitting:
        return "no supported Calico release fits this Kubernetes version"
    return f"use a {' or '.join(fitting)} release, e.g. {fitting[0]}.0 or newer patch"


def kubernetes_apt_repository(mirror_base: str, minor: str) -> str:
    """pkgs.k8s.io has one repository per minor: <base>/v1.34/deb/."""
    return f"{mirror_base}/v{minor}/deb/"


def calico_node_images(registry: str, calico_version: str) -> tuple[str, ...]:
    """What the operator runs on every node, as Installation.spec.registry + calico/<name>:v<version>."""
    return tuple(f"{registry}calico/{image}:v{calico_version}" for image in CALICO_NODE_IMAGES)
