"""The images the cluster pulls: kubeadm's tags per release (components/versions.py)."""

from __future__ import annotations

from components import versions


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
