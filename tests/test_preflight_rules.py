"""kubernetesVersion x imageUrl: validation accepts exactly what kubeadm's SystemVerification preflight accepts, for
`kubeadm init` and `kubeadm join` alike, given what the project tells kubeadm to ignore.

The expectations below are written out per image and minor from kubeadm's source (versions.SYSTEM_VERIFICATION
cites it), not computed by the code under test; the rendered init and join configurations are then checked to
ignore SystemVerification wherever its errors were accepted.
"""

from __future__ import annotations

import re

import pytest

from components import versions
from components.kubeadm_config import join_configuration, kubeadm_documents
from components.validation import ConfigError, RawConfig, parse_cluster_config
from tests.test_config_validation import dev_values

IMAGES = {
    "bionic": "https://cloud-images.ubuntu.com/bionic/current/bionic-server-cloudimg-amd64.img",
    "focal": "https://cloud-images.ubuntu.com/focal/current/focal-server-cloudimg-amd64.img",
    "jammy": "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img",
    "noble": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
    "debian-12": "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
}
# A Calico release that supports each minor (1.31 has none: validation refuses it for calicoVersion, a separate rule).
CALICO = {31: "3.31.6", 32: "3.31.6", 33: "3.31.6", 34: "3.31.6", 35: "3.31.6", 36: "3.32.1", 37: "3.33.0"}

OK, KERNEL, CGROUP_V1, CONTAINERD = "ok", "kernel", "cgroup v1", "containerd 2"
# (image, minor) -> what validation must say, without and with allowCgroupV1.
#   bionic 4.15/v1: 1.32-1.33 want kernel 4.19+ (error); 1.34+ only warn about the kernel; 1.35+ fail on cgroup v1.
#   focal 5.4/v1: the kernel passes everywhere; cgroup v1 as bionic. jammy, noble, debian-12: cgroup v2, current kernels.
EXPECTED: dict[tuple[str, int], tuple[str, str]] = {
    **{("bionic", m): (OK, OK) for m in (31, 34)},
    **{("bionic", m): (KERNEL, KERNEL) for m in (32, 33)},
    ("bionic", 35): (CGROUP_V1, OK),
    **{("bionic", m): (CONTAINERD, CONTAINERD) for m in (36, 37)},
    **{("focal", m): (OK, OK) for m in (31, 32, 33, 34)},
    ("focal", 35): (CGROUP_V1, OK),
    **{("focal", m): (CONTAINERD, CONTAINERD) for m in (36, 37)},
    **{(image, m): (OK, OK) for image in ("jammy", "noble", "debian-12") for m in range(31, 38)},
}
FRAGMENTS = {
    KERNEL: ["fails kubeadm's SystemVerification preflight (init and join) on Ubuntu 18.04 (kernel 4.15, cgroup v1)",
             "kernel release 4.15.0-213-generic is unsupported", "fix: use 1.34, or an image with a kernel kubeadm"],
    CGROUP_V1: ["fails kubeadm's SystemVerification preflight (init and join)", "cgroup v1", "fix: use ",
                "refuses cgroup v1 by default", "`pulumi config set allowCgroupV1 true`"],
    CONTAINERD: ["cannot run on this image", "needs containerd 2", "or an Ubuntu 22.04/24.04 or Debian 12 imageUrl"],
}  # fmt: skip


def version_problems(image: str, minor: int, allow_cgroup_v1: bool) -> list[str]:
    values = dev_values(
        imageUrl=IMAGES[image], kubernetesVersion=f"1.{minor}", calicoVersion=CALICO[minor],
        allowCgroupV1="true" if allow_cgroup_v1 else "false",
    )  # fmt: skip
    try:
        parse_cluster_config(RawConfig(values))
    except ConfigError as error:
        return [problem for problem in error.problems if problem.startswith("kubernetesVersion:")]
    return []


def test_every_known_image_and_supported_minor_is_covered() -> None:
    low, high = versions.SUPPORTED_KUBERNETES_MINORS
    assert set(EXPECTED) == {(image, minor) for image in IMAGES for minor in range(low, high + 1)}
    assert set(versions.SYSTEM_VERIFICATION) == set(range(low, high + 1))
    assert [versions.image_facts(url).name for url in IMAGES.values()] == [
        "Ubuntu 18.04", "Ubuntu 20.04", "Ubuntu 22.04", "Ubuntu 24.04", "Debian 12"
    ]  # fmt: skip


@pytest.mark.parametrize("allow_cgroup_v1", [False, True], ids=["default", "allowCgroupV1"])
@pytest.mark.parametrize(("image", "minor"), sorted(EXPECTED), ids=[f"{i}-1.{m}" for i, m in sorted(EXPECTED)])
def test_validation_accepts_exactly_what_preflight_accepts(image: str, minor: int, allow_cgroup_v1: bool) -> None:
    expected = EXPECTED[image, minor][allow_cgroup_v1]
    problems = version_problems(image, minor, allow_cgroup_v1)
    if expected == OK:
        assert problems == []
        return
    (problem,) = problems
    assert problem.startswith(f"kubernetesVersion: '1.{minor}' ") and "; fix: " in problem
    for fragment in FRAGMENTS[expected]:
        assert fragment in problem, (fragment, problem)


@pytest.mark.parametrize("allow_cgroup_v1", [False, True], ids=["default", "allowCgroupV1"])
@pytest.mark.parametrize(("image", "minor"), sorted(EXPECTED), ids=[f"{i}-1.{m}" for i, m in sorted(EXPECTED)])
def test_init_and_join_ignore_system_verification_wherever_it_fails(image: str, minor: int, allow_cgroup_v1: bool) -> None:
    """What validation accepts must also pass both preflights as rendered: kubeadm init runs on the control plane,
    kubeadm join on each worker, each checking its own kernel and kubelet; an error passes only when ignored."""
    values = dev_values(
        imageUrl=IMAGES[image], kubernetesVersion=f"1.{minor}", calicoVersion=CALICO[minor],
        allowCgroupV1="true" if allow_cgroup_v1 else "false",
    )  # fmt: skip
    try:
        config = parse_cluster_config(RawConfig(values))
    except ConfigError:
        return  # refused: nothing runs
    init = kubeadm_documents(config)[0]
    ignored_by_init = init["nodeRegistration"].get("ignorePreflightErrors", [])
    errors = versions.system_verification_errors(minor, versions.image_facts(IMAGES[image]))
    for worker in config.workers:
        ignored_by_join = join_configuration(config, worker)["nodeRegistration"].get("ignorePreflightErrors", [])
        assert ignored_by_join == ignored_by_init, worker.name
    if errors:  # accepted although SystemVerification fails here: only because it is ignored, on every node
        assert "SystemVerification" in ignored_by_init
    # The project ignores nothing else, and SystemVerification only under allowCgroupV1.
    assert set(ignored_by_init) <= {"SystemVerification"}
    assert not ignored_by_init or allow_cgroup_v1


@pytest.mark.parametrize(
    ("minor", "kernel", "error"),
    [
        (31, "4.15.0-213-generic", False), (32, "4.15.0-213-generic", True), (33, "4.15.0-213-generic", True),
        (33, "4.19.0-27-amd64", False), (33, "5.4.0-200-generic", False), (34, "4.15.0-213-generic", False),
        (37, "4.15.0-213-generic", False),
    ],
)  # fmt: skip
def test_the_kernel_rule_per_minor(minor: int, kernel: str, error: bool) -> None:
    facts = versions.ImageFacts("test image", kernel, cgroup_v1=False)
    assert bool(versions.system_verification_errors(minor, facts)) is error
    rules = versions.SYSTEM_VERIFICATION[minor]
    # 1.34+ (system-validators 1.10) still compares the kernel, but only warns: 4.15 does not match, yet passes.
    matches = any(re.search(pattern, kernel) for pattern in rules.kernel_versions)
    assert error == (rules.kernel_mismatch_is_error and not matches)


def test_an_unrecognised_image_is_not_held_to_a_kernel_or_cgroup_rule(tmp_path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    assert versions.image_facts(str(image)) is None
    config = parse_cluster_config(RawConfig(dev_values(imageUrl=str(image), kubernetesVersion="1.36", calicoVersion="3.32.1")))
    assert config.kubernetes.minor_number == 36
