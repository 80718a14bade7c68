"""Pure parts of the lab's guest image builder (lab/image.py), checked without building anything."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from lab import image
from lab.errors import LabError
from lab.image import BASE_PACKAGES, check_host_tools, debian_mirror, image_key, master_boot_record


def test_cache_key_follows_packages_builder_version_suite_and_customization() -> None:
    base = image_key(BASE_PACKAGES)
    assert image_key(BASE_PACKAGES) == base
    assert image_key(reversed(BASE_PACKAGES)) == base, "the order of the package list is not part of the key"
    assert image_key([*BASE_PACKAGES, "vim-tiny"]) != base
    assert image_key(BASE_PACKAGES[1:]) != base
    assert image_key(BASE_PACKAGES, builder_version="lab-image-0") != base
    assert image_key(BASE_PACKAGES, suite="trixie") != base
    assert image_key(BASE_PACKAGES, customization=image.CUSTOMIZATION + "\n# one more line") != base


def test_customization_covers_what_goes_into_the_tree() -> None:
    for text in (image._CLOUD_CFG, image._CUSTOMIZE_SCRIPT, image._GRUB_CFG, image._BOOTLOADER_SCRIPT, image._FSTAB, image._MKE2FS_CONF):
        assert text in image.CUSTOMIZATION


def test_build_guest_image_is_under_images_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEADM_LIBVIRT_LAB_CACHE", str(tmp_path))
    key = image_key(BASE_PACKAGES)
    (tmp_path / "images" / key).mkdir(parents=True)  # a finished image (it appears by rename): reused, not built
    assert image.build_guest_image() == tmp_path / "images" / key / "disk.qcow2"


@pytest.mark.parametrize(
    ("missing", "package"),
    [
        ("debootstrap", "debootstrap"),
        ("qemu-img", "qemu-utils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring"),
    ],
)
def test_missing_host_tool_names_the_apt_package(missing: str, package: str) -> None:
    def which(tool: str) -> str | None:
        return None if tool == missing else f"/usr/bin/{tool}"

    def exists(path: str) -> bool:
        return path != missing

    with pytest.raises(LabError) as raised:
        check_host_tools(which=which, exists=exists)
    message = str(raised.value)
    assert "\n" not in message
    assert missing in message and f"apt-get install -y {package}" in message


def test_all_host_tools_present_passes() -> None:
    check_host_tools(which=lambda tool: f"/usr/bin/{tool}", exists=lambda path: True)


def test_master_boot_record_has_one_bootable_linux_partition() -> None:
    boot_code = bytes(range(256)) * 2  # 512 bytes, like GRUB's boot.img; only the first 440 may be used
    mbr = master_boot_record(boot_code, disk_id=0x12345678, start_sector=2048, sector_count=6289408)
    assert len(mbr) == 512
    assert mbr[:440] == boot_code[:440]
    assert struct.unpack_from("<I", mbr, 440)[0] == 0x12345678
    status, kind, start, count = mbr[446], mbr[450], *struct.unpack_from("<II", mbr, 454)
    assert (status, kind, start, count) == (0x80, 0x83, 2048, 6289408)
    assert mbr[462:510] == bytes(48), "partitions 2-4 are empty"
    assert mbr[510:] == b"\x55\xaa"
    with pytest.raises(ValueError):
        master_boot_record(b"short", 0, 2048, 1)


def test_debian_mirror_reads_both_source_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb-src http://src/ bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one/debian bookworm main\n")
    assert debian_mirror("bookworm", tmp_path) == "http://one/debian"
    (tmp_path / "sources.list").write_text("")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://off/\nSuites: bookworm\nEnabled: no\n\nTypes: deb deb-src\nURIs: http://two/debian\nSuites: bookworm\n bookworm-updates\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://two/debian"
    with pytest.raises(LabError, match="no enabled apt source"):
        debian_mirror("trixie", tmp_path)


def test_stale_builds_of_dead_builders_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 1  # above the kernel's largest pid_max: no such process can exist
    stale = [tmp_path / f".build-0123456789abcdef-{dead_pid}", tmp_path / f".old-fedcba9876543210-{dead_pid}"]
    live = tmp_path / f".build-0123456789abcdef-{os.getpid()}"  # a build still running: left alone
    finished = tmp_path / "0123456789abcdef"
    for directory in [*stale, live, finished]:
        (directory / "tree").mkdir(parents=True)
    image._remove_stale_builds(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, finished.name])
