"""Build (once) and cache a Debian guest image for the real-VM tests.

The image is a debootstrap tree turned into an ext4 filesystem inside a qcow2
file, plus the kernel and initrd taken out of it so QEMU can boot them directly
(no bootloader, no partition table). It plays the part of the cloud image the
Pulumi program boots under libvirt: cloud-init with the NoCloud datasource,
netplan rendering to systemd-networkd, sshd, and the packages the node scripts
would otherwise download.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .apt_sources import debian_mirror
from .mounts import assert_nothing_mounted_under

# Bump whenever the build steps change, so cached images are rebuilt.
BUILDER_VERSION = "realvm-image-6"
SUITE = "bookworm"
ROOTFS_SIZE = "3G"
ROOT_LABEL = "rootfs"

BASE_PACKAGES: tuple[str, ...] = (
    # boot and init
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",  # hostnamectl, used by cloud-init to set the hostname, talks to systemd over D-Bus
    "kmod",
    # provisioning and access
    "cloud-init",
    "netplan.io",
    "openssh-server",
    "sudo",
    # resolves the node's own hostname without DNS: the lab network has no DNS server,
    # and sudo would otherwise stall on every call trying to look the name up
    "libnss-myhostname",
    # tools the tests and node scripts use
    "iproute2",
    "iputils-ping",
    "procps",
    "psmisc",
    "ca-certificates",
    "curl",
    "gpg",
    # what install-runtime / install-kubeadm would download; the guests have no internet
    "containerd",
    "conntrack",
    "socat",
    "ipset",
    "ipvsadm",
    "ebtables",
    "ethtool",
    "apt-transport-https",
    # build tooling: initramfs-tools compresses with zstd when present (faster to unpack than gzip)
    "zstd",
)

# The guest's initrd only has to find an ext4 root on virtio-blk. The default (MODULES=most)
# is a 36 MB initrd that takes seconds to unpack under TCG; this one is a few MB.
_INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

# cloud-init reads only the seed ISO, renders the network with netplan (to systemd-networkd),
# and leaves the root filesystem alone: it is already its full size and there is no partition.
# The rest trims first-boot work that is slow under TCG and means nothing here: RSA/DSA host
# keys, grub (there is none) and printing host keys to the console.
_CLOUD_CFG = """\
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [netplan]
growpart:
  mode: "off"
resize_rootfs: false
ssh_genkeytypes: [ed25519]
grub_dpkg:
  enabled: false
ssh:
  emit_keys_to_console: false
"""

# Debian's sshd refuses to start without host keys; cloud-init normally makes them first,
# this makes sure sshd still comes up if a seed turns cloud-init's ssh module off.
_SSH_KEYGEN_DROPIN = """\
[Service]
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
"""

_FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"

_HOSTS = """\
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

# Run inside the chroot once the packages are in. Every step here is about making the tree a
# clean template: nothing host- or instance-specific may survive into the image.
_CUSTOMIZE_SCRIPT = r"""
set -eu
systemctl enable systemd-networkd.service
# systemd-networkd-wait-online holds cloud-init and sshd back ~12 s per boot: networkd waits
# for an IPv6 router advertisement that never comes (netplan leaves RA on unless the
# network-config says accept-ra: false). Nothing here needs network-online.target.
systemctl mask systemd-networkd-wait-online.service
# early module loads and a scrub nobody needs in a throw-away test VM, each seconds under TCG
systemctl mask modprobe@drm.service modprobe@efi_pstore.service e2scrub_reap.service
# cloud-init's locale module would otherwise run locale-gen on first boot, which is slow under TCG
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen
update-locale LANG=en_US.UTF-8
usermod -p '*' root
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/hostname
# an empty resolv.conf makes lookups fail at once (glibc falls back to 127.0.0.1) instead of
# timing out against the host's resolvers, which the restricted guest network cannot reach
: > /etc/resolv.conf
if [ "$(dpkg-query -W -f='${db:Status-Status}' ifupdown 2>/dev/null)" = installed ]; then
    echo "ifupdown must not be in the image: it would fight networkd over the NIC" >&2
    exit 1
fi
# Kernel modules for hardware a QEMU guest never has are about half the image.
# Kept: virtio, netfilter, bridge/vxlan/veth/ipvs and the rest a CNI needs.
for modules in /usr/lib/modules/*; do
    (cd "$modules/kernel" && rm -rf sound net/wireless net/mac80211 net/bluetooth \
        drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/bluetooth drivers/iio \
        drivers/isdn drivers/nfc drivers/mtd drivers/mmc drivers/usb drivers/hid \
        drivers/net/wireless drivers/net/ethernet)
    depmod "${modules##*/}"
done
rm -f /usr/sbin/policy-rc.d
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
rm -rf /var/log/*.log /var/log/apt/* /var/cache/debconf/*-old /tmp/* /var/tmp/*
"""


_BUILD_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}


class ImageBuildError(RuntimeError):
    """The guest image could not be built."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: direct kernel boot of ``kernel``/``initrd`` with ``rootfs`` as /dev/vda."""

    kernel: Path
    initrd: Path
    rootfs: Path  # qcow2; use it only as the backing file of per-VM overlays
    kernel_args: str = f"root=LABEL={ROOT_LABEL} rw console=ttyS0"


def ensure_guest_image(cache_dir: Path, extra_packages: Sequence[str] = ()) -> GuestImage:
    """Return the cached image for this package set, building it first if it is missing."""
    packages = sorted(set(BASE_PACKAGES) | set(extra_packages))
    key = image_key(packages)
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    final_dir = cache_dir / key
    # The lock serializes builders of the same key; the rename makes a finished image appear
    # all at once, so a directory named after the key is always complete.
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final_dir.is_dir():
            _remove_stale_builds(cache_dir, key)
            _build(final_dir, packages)
        else:
            _log(f"reusing cached image {final_dir}")
    return _image_in(final_dir)


def image_key(packages: Sequence[str]) -> str:
    material = "\n".join([BUILDER_VERSION, SUITE, *sorted(set(packages))])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _image_in(directory: Path) -> GuestImage:
    return GuestImage(kernel=directory / "vmlinuz", initrd=directory / "initrd.img", rootfs=directory / "rootfs.qcow2")


def _build(final_dir: Path, packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the guest image needs root (debootstrap, chroot, mount)")
    work = final_dir.with_name(f".build-{final_dir.name}-{os.getpid()}")
    tree = work / "tree"
    log_path = work / "build.log"
    work.mkdir()
    try:
        mirror = debian_mirror(SUITE)
        _log(f"building {final_dir.name}: debootstrap {SUITE} from {mirror} ({len(packages)} packages); log {log_path}")
        debs = final_dir.parent / "debs"  # downloaded .debs, reused by later builds of any key
        debs.mkdir(exist_ok=True)
        try:
            _run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(tree), mirror], log_path)
        except ImageBuildError as error:
            details = tree / "debootstrap/debootstrap.log"
            tail = details.read_text(errors="replace").splitlines()[-30:] if details.exists() else []
            raise ImageBuildError(f"{error}\n--- {details}:\n" + "\n".join(tail)) from None
        assert_nothing_mounted_under(tree)
        _log(f"installing {len(packages)} packages in the chroot")
        # Nothing may start inside the chroot: without a running systemd, invoke-rc.d would
        # fall back to the init scripts and start sshd and friends on the host.
        _write(tree / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", mode=0o755)
        _write(tree / "etc/cloud/cloud.cfg.d/90-realvm.cfg", _CLOUD_CFG)
        _write(tree / "etc/systemd/system/ssh.service.d/10-hostkeys.conf", _SSH_KEYGEN_DROPIN)
        _write(tree / "etc/fstab", _FSTAB)
        _write(tree / "etc/hosts", _HOSTS)
        _copy_debs(debs, tree / "var/cache/apt/archives")
        # apt (not debootstrap's --include) resolves the packages: it understands virtual
        # packages, which debootstrap does not (python3-cryptography needs one, via cloud-init).
        with _proc_mounted(tree):
            _run(["chroot", str(tree), "apt-get", "update"], log_path)
            _run(["chroot", str(tree), "apt-get", "install", "-y", "--no-install-recommends", *packages], log_path)
        _copy_debs(tree / "var/cache/apt/archives", debs)
        _log("customizing the tree")
        _write(tree / "etc/initramfs-tools/modules", "".join(f"{m}\n" for m in _INITRD_MODULES))
        _write(tree / "etc/initramfs-tools/conf.d/90-realvm.conf", "MODULES=list\nCOMPRESS=zstd\n")
        with _proc_mounted(tree):
            _run(["chroot", str(tree), "update-initramfs", "-u", "-k", "all"], log_path)
            _run(["chroot", str(tree), "/bin/sh", "-c", _CUSTOMIZE_SCRIPT], log_path)
        _take_boot_files(tree, work)
        _log("making the ext4 filesystem and the qcow2 image")
        raw = work / "rootfs.raw"
        _run(["truncate", "-s", ROOTFS_SIZE, str(raw)], log_path)
        _run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-d", str(tree), str(raw)], log_path)
        _run(
            # Not compressed: reading compressed clusters cost ~10 s per guest boot under TCG.
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "rootfs.qcow2")],
            log_path,
        )
        raw.unlink()
        _remove_build_dir(tree)
        work.rename(final_dir)
        size_mib = (final_dir / "rootfs.qcow2").stat().st_size // 2**20
        _log(f"image ready: {final_dir} (rootfs.qcow2 {size_mib} MiB on disk)")
    except BaseException:
        _remove_build_dir(work)
        raise


@contextmanager
def _proc_mounted(tree: Path) -> Iterator[None]:
    """/proc inside the chroot for the package scripts (initramfs, for one) that read it."""
    subprocess.run(["mount", "-t", "proc", "proc", str(tree / "proc")], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(tree / "proc")], check=False)
        assert_nothing_mounted_under(tree)


def _copy_debs(source: Path, target: Path) -> None:
    for deb in source.glob("*.deb"):
        if not (target / deb.name).exists():
            shutil.copyfile(deb, target / deb.name)


def _take_boot_files(tree: Path, work: Path) -> None:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise ImageBuildError(f"expected one kernel and one initrd in {tree / 'boot'}, found {kernels} {initrds}")
    shutil.copyfile(kernels[0], work / "vmlinuz")
    shutil.copyfile(initrds[0], work / "initrd.img")


def _remove_stale_builds(cache_dir: Path, key: str) -> None:
    """Delete leftovers of builds that were killed before they could clean up."""
    for leftover in cache_dir.glob(f".build-{key}-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _log(f"removing stale build {leftover}")
            _remove_build_dir(leftover)


def _remove_build_dir(path: Path) -> None:
    if not path.exists():
        return
    # debootstrap mounts /proc (and more) inside the tree; deleting through a live mount
    # would delete the host's files, so refuse rather than guess.
    assert_nothing_mounted_under(path)
    shutil.rmtree(path)


def _run(command: Sequence[str], log_path: Path) -> None:
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_BUILD_ENV)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise ImageBuildError(f"{' '.join(command[:3])} failed with exit code {result.returncode}; last lines of {log_path}:\n" + "\n".join(tail))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _log(message: str) -> None:
    print(f"[realvm.image] {message}", file=sys.stderr, flush=True)
