"""Build (once) and cache the lab's Debian 12 guest image: a qcow2 disk that boots from itself, as a cloud image does.

The disk: an MBR partition table with one ext4 partition (label ``rootfs``) from 1 MiB to the end of the disk, GRUB
(i386-pc) in the MBR and the gap before the partition, and a kernel plus a small initrd in the filesystem. GRUB boots
``/vmlinuz`` with ``root=LABEL=rootfs console=ttyS0``. cloud-init reads a NoCloud seed (the ``cidata`` CD-ROM that
pulumi-libvirt's CloudInitDisk makes), renders the network with netplan to systemd-networkd and, on first boot, grows
the partition and the filesystem to the size of the VM's overlay (growpart from cloud-guest-utils, then resize2fs).

Nothing here needs a loop device, a mount of the image or udev: ``mke2fs -d`` writes the tree straight into the
partition at its offset in a raw file, and the MBR and GRUB's boot sectors are plain writes into the same file.
GRUB's images come from the guest tree itself (grub-pc-bin), so the host needs no bootloader package.

A finished image is a directory named after its cache key (builder version, suite, package list and every file and
script the build puts into the tree): it appears by a rename once complete, builders of one key serialize on a lock
file, and leftovers of killed builds are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .paths import images_root

# Bump whenever the build steps change in a way the cache key does not see (the key already covers the package list
# and every text below that goes into the tree).
BUILDER_VERSION = "lab-image-1"
SUITE = "bookworm"
ROOT_LABEL = "rootfs"
DISK_BYTES = 3 * 2**30  # the base disk; VMs get copy-on-write overlays of their own size and grow into it
SECTOR = 512
PARTITION_START_SECTOR = 2048  # 1 MiB, as every partitioning tool aligns it; GRUB's core.img lives in the gap
DISK_NAME = "disk.qcow2"

BASE_PACKAGES: tuple[str, ...] = (
    # boot and init
    "linux-image-amd64",
    "grub-pc-bin",  # GRUB's i386-pc images and modules; not grub-pc, whose debconf wants an install device
    "systemd-sysv",
    "udev",
    "dbus",  # hostnamectl, used by cloud-init to set the hostname, talks to systemd over D-Bus
    "kmod",
    "e2fsprogs",  # resize2fs, for cloud-init's resize_rootfs
    # provisioning and access
    "cloud-init",
    "cloud-guest-utils",  # growpart, for cloud-init's growpart
    "netplan.io",
    # networkd hands the rendered nameservers to resolved, which /etc/resolv.conf points at (as on Ubuntu's cloud
    # images): without it the resolver file stays empty, and CoreDNS, which forwards to the node's resolvers,
    # refuses to start ("plugin/forward: no nameservers found")
    "systemd-resolved",
    "openssh-server",
    "sudo",
    "qemu-guest-agent",  # a few hundred KiB over what is already in (glib); idle unless libvirt adds its channel
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

# The initrd finds an ext4 root on virtio (virtio-blk, or virtio-scsi if a domain asks for it) and probes the IDE
# CD-ROM that carries the cloud-init seed. The default (MODULES=most) is a 36 MB initrd that takes seconds to unpack
# under TCG; this one is a few MB. Everything else (ISO 9660 among it) loads from the root filesystem.
# The CD-ROM's drivers are here because cloud-init's local stage looks for the seed once, early, with blkid: when the
# CD-ROM was not probed yet it writes a DHCP fallback network config, and on a reboot (same instance) the network
# stage keeps it, so the node comes back without its static address (seen in the lab's reboot test: "No local
# datasource found", then "No network config applied"). Ubuntu's cloud images have these drivers in their initrd.
_INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ext4", "crc32c_generic", "ata_piix", "sr_mod")
_INITRAMFS_CONF = "MODULES=list\nCOMPRESS=zstd\n"

# cloud-init reads only the seed, renders the network with netplan (to systemd-networkd), and on first boot grows the
# root partition and filesystem to the disk the VM was given. The rest trims first-boot work that is slow under TCG:
# RSA/DSA host keys (the stack's seeds bring their own key anyway), grub-pc's debconf (there is no grub-pc package)
# and printing host keys to the console.
_CLOUD_CFG = """\
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [netplan]
growpart:
  mode: auto
  devices: ["/"]
resize_rootfs: true
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

# And the local stage starts once udev has handled the devices the kernel found (the seed's /dev/sr0 among them), so
# that blkid sees the seed however slowly a loaded TCG host boots.
_CLOUD_INIT_LOCAL_DROPIN = """\
[Unit]
After=systemd-udev-trigger.service
[Service]
ExecStartPre=-/bin/udevadm settle --timeout=60
"""

_FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"

_HOSTS = """\
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

# /vmlinuz and /initrd.img are the symlinks the kernel package keeps pointing at the newest kernel, so this file
# stays right across kernel upgrades without grub-mkconfig. Serial first: libvirt gives each domain a serial pty.
# tsc=reliable: under TCG the kernel's boot-time check finds two vCPUs' TSCs "unsynchronized" (the check itself
# runs emulated) and falls back to the HPET, and then every clock read of every Go program on the node is a
# clock_gettime syscall plus an emulated MMIO access (README, Troubleshooting, has the figures). TCG derives every
# vCPU's TSC from the host's, so it is reliable; the flag keeps it as the clocksource, read in the vDSO.
_GRUB_CFG = f"""\
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry "Debian GNU/Linux 12" {{
    linux /vmlinuz root=LABEL={ROOT_LABEL} ro console=ttyS0 tsc=reliable
    initrd /initrd.img
}}
"""

# The ext4 features of bookworm's mke2fs.conf, stated here so a newer host's defaults (orphan_file,
# metadata_csum_seed, ...) cannot make a filesystem that bookworm's GRUB or kernel cannot read.
_MKE2FS_CONF = """\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
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
# early module loads and a scrub nobody needs in a throw-away lab VM, each seconds under TCG
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
# Name resolution as on Ubuntu's cloud images: /etc/resolv.conf is resolved's stub, resolved asks the servers
# networkd got from the rendered nameservers, and the kubelet (kubeadm sees resolved running) gives pods
# /run/systemd/resolve/resolv.conf. No fallback servers: before the network is configured a lookup fails at
# once rather than going to resolved's built-in public resolvers, which the lab network must never target.
ln -sfn ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
mkdir -p /etc/systemd/resolved.conf.d
printf '[Resolve]\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\n' > /etc/systemd/resolved.conf.d/kubeadm-libvirt-lab.conf
systemctl enable systemd-resolved.service
if [ "$(dpkg-query -W -f='${db:Status-Status}' ifupdown 2>/dev/null)" = installed ]; then
    echo "ifupdown must not be in the image: it would fight networkd over the NIC" >&2
    exit 1
fi
# Kernel modules for hardware a QEMU guest never has are about half the image.
# Kept: virtio, ATA/SCSI and ISO 9660 (the seed CD-ROM), netfilter, bridge/vxlan/veth/ipvs and the rest a CNI needs.
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

# What grub-install would do, minus the device probing that needs udev: the modules next to grub.cfg, and a core
# image that finds them on the first partition of the disk it was booted from ("(,msdos1)": the BIOS boot drive).
_BOOTLOADER_SCRIPT = r"""
set -eu
rm -rf /boot/grub/i386-pc
mkdir -p /boot/grub
cp -r /usr/lib/grub/i386-pc /boot/grub/i386-pc
grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(,msdos1)/boot/grub' biosdisk part_msdos ext2
test -e /vmlinuz && test -e /initrd.img
"""

# Everything the build writes into the tree or runs there: a change to any of it is a different image.
CUSTOMIZATION = "\n".join(
    [
        _CLOUD_CFG,
        _SSH_KEYGEN_DROPIN,
        _CLOUD_INIT_LOCAL_DROPIN,
        _FSTAB,
        _HOSTS,
        _INITRAMFS_CONF,
        *_INITRD_MODULES,
        _CUSTOMIZE_SCRIPT,
        _BOOTLOADER_SCRIPT,
        _GRUB_CFG,
        _MKE2FS_CONF,
        f"disk={DISK_BYTES} start={PARTITION_START_SECTOR}",
    ]
)

# (command, apt package that provides it); a path means a file the package ships
HOST_TOOLS: tuple[tuple[str, str], ...] = (
    ("debootstrap", "debootstrap"),
    ("/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring"),
    ("mkfs.ext4", "e2fsprogs"),
    ("qemu-img", "qemu-utils"),
    ("chroot", "coreutils"),
    ("mount", "mount"),
)

_LOG_PREFIX = "[lab.image]"


@dataclass(frozen=True)
class BuiltImage:
    """One finished image directory and the bootable disk in it."""

    directory: Path
    disk: Path  # qcow2; use it only as the backing file of per-VM overlays

    @classmethod
    def in_directory(cls, directory: Path) -> BuiltImage:
        return cls(directory, directory / DISK_NAME)


class NoAptSource(LabError):
    """No enabled apt source serves the requested suite."""


def build_guest_image(force: bool = False) -> Path:
    """The lab's guest disk (qcow2) under images_root(), built first if it is missing, or again if ``force``."""
    return ensure_image(images_root(), BASE_PACKAGES, force=force).disk


def ensure_image(cache_dir: Path, packages: Sequence[str] = BASE_PACKAGES, *, force: bool = False) -> BuiltImage:
    """The cached image for this package set under ``cache_dir``, building it first if it is missing (or ``force``)."""
    packages = sorted(set(packages))
    key = image_key(packages)
    cache_dir = Path(cache_dir).resolve()
    final_dir = cache_dir / key
    if final_dir.is_dir() and not force:  # a directory named after the key is always complete (it appears by rename)
        _log(f"reusing cached image {final_dir / DISK_NAME}")
        return BuiltImage.in_directory(final_dir)
    check_host_tools()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The lock serializes builders of the same key; another builder may have finished while this one waited.
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_builds(cache_dir)
        if final_dir.is_dir() and not force:
            _log(f"reusing cached image {final_dir / DISK_NAME}")
        else:
            _build(final_dir, packages)
    return BuiltImage.in_directory(final_dir)


def image_key(
    packages: Sequence[str],
    *,
    builder_version: str = BUILDER_VERSION,
    suite: str = SUITE,
    customization: str = CUSTOMIZATION,
) -> str:
    customization_digest = hashlib.sha256(customization.encode()).hexdigest()
    material = "\n".join([builder_version, suite, customization_digest, *sorted(set(packages))])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def check_host_tools(which: Callable[[str], str | None] = shutil.which, exists: Callable[[str], bool] = os.path.exists) -> None:
    """Raise LabError naming the first missing host tool and the apt package that provides it."""
    for tool, package in HOST_TOOLS:
        found = exists(tool) if tool.startswith("/") else which(tool) is not None
        if not found:
            raise LabError(f"building the guest image needs {tool}, which is missing: apt-get install -y {package}")


def debian_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The first enabled ``deb`` source for ``suite``, from deb822 .sources or one-line .list files."""
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(path.read_text()):
                enabled = stanza.get("enabled", "yes").lower() != "no"
                if enabled and "deb" in stanza.get("types", "").split() and suite in stanza.get("suites", "").split():
                    return stanza["uris"].split()[0]
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in path.read_text().splitlines():
                uri_and_suite = _one_line_source(line)
                if uri_and_suite and uri_and_suite[1] == suite:
                    return uri_and_suite[0]
    raise NoAptSource(f"no enabled apt source for suite {suite!r} under {apt_dir}: the image is built from the mirror apt uses")


def master_boot_record(boot_code: bytes, disk_id: int, start_sector: int, sector_count: int) -> bytes:
    """An MBR: ``boot_code`` (GRUB's boot.img; only its first 440 bytes are code), and one bootable Linux partition
    in LBA terms (the CHS fields say "beyond CHS", as partitioning tools write for disks of this size)."""
    if len(boot_code) < 440:
        raise ValueError(f"boot code is {len(boot_code)} bytes, expected at least 440")
    beyond_chs = b"\xfe\xff\xff"
    entry = struct.pack("<B3sB3sII", 0x80, beyond_chs, 0x83, beyond_chs, start_sector, sector_count)
    return boot_code[:440] + struct.pack("<IH", disk_id, 0) + entry + bytes(16 * 3) + b"\x55\xaa"


def _build(final_dir: Path, packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise LabError("building the guest image needs root (debootstrap, chroot, mount /proc): run it as root")
    started = time.monotonic()
    work = final_dir.with_name(f".build-{final_dir.name}-{os.getpid()}")
    tree = work / "tree"
    log_path = work / "build.log"
    work.mkdir()
    try:
        mirror = debian_mirror(SUITE)
        _log(f"building {final_dir.name}: debootstrap {SUITE} from {mirror} ({len(packages)} packages); log {log_path}")
        debs = final_dir.parent / "debs"  # downloaded .debs, reused by later builds of any key
        debs.mkdir(exist_ok=True)
        _run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(tree), mirror], log_path, tree / "debootstrap/debootstrap.log")
        assert_nothing_mounted_under(tree)
        _log(f"installing {len(packages)} packages in the chroot")
        # Nothing may start inside the chroot: without a running systemd, invoke-rc.d would
        # fall back to the init scripts and start sshd and friends on the host.
        _write(tree / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", mode=0o755)
        _write(tree / "etc/cloud/cloud.cfg.d/90-lab.cfg", _CLOUD_CFG)
        _write(tree / "etc/systemd/system/ssh.service.d/10-hostkeys.conf", _SSH_KEYGEN_DROPIN)
        _write(tree / "etc/systemd/system/cloud-init-local.service.d/10-seed-probed.conf", _CLOUD_INIT_LOCAL_DROPIN)
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
        _write(tree / "etc/initramfs-tools/conf.d/90-lab.conf", _INITRAMFS_CONF)
        with _proc_mounted(tree):
            _run(["chroot", str(tree), "update-initramfs", "-u", "-k", "all"], log_path)
            _run(["chroot", str(tree), "/bin/sh", "-c", _CUSTOMIZE_SCRIPT], log_path)
        _write(tree / "boot/grub/grub.cfg", _GRUB_CFG)
        _run(["chroot", str(tree), "/bin/sh", "-c", _BOOTLOADER_SCRIPT], log_path)
        _log("writing the partitioned disk and converting it to qcow2")
        _make_disk(tree, work, final_dir.name, log_path)
        _remove_build_dir(tree)
        _publish(work, final_dir)
        size_mib = (final_dir / DISK_NAME).stat().st_size / 2**20
        _log(f"image ready in {time.monotonic() - started:.0f} s: {final_dir / DISK_NAME} ({size_mib:.0f} MiB on disk, {DISK_BYTES // 2**30} GiB virtual)")
    except BaseException:
        if log_path.exists():
            kept = final_dir.with_name(f"{final_dir.name}.failed.log")
            shutil.copyfile(log_path, kept)
            _log(f"build failed after {time.monotonic() - started:.0f} s; its log is kept at {kept}")
        _remove_build_dir(work)
        raise


def _publish(work: Path, final_dir: Path) -> None:
    """Rename the finished build to its final name; a forced rebuild first moves the old image aside (under the lock,
    so no builder sees the key missing; a reader that already holds paths into the old one keeps them until it goes)."""
    previous = final_dir.with_name(f".old-{final_dir.name}-{os.getpid()}")
    if final_dir.is_dir():
        final_dir.rename(previous)
    work.rename(final_dir)
    _remove_build_dir(previous)


def _make_disk(tree: Path, work: Path, key: str, log_path: Path) -> None:
    """The raw disk: MBR with GRUB's boot code, GRUB's core image in the gap, the tree as ext4 in partition 1."""
    raw = work / "disk.raw"
    grub_dir = tree / "boot/grub/i386-pc"
    core = (grub_dir / "core.img").read_bytes()
    gap = (PARTITION_START_SECTOR - 1) * SECTOR
    if len(core) > gap:
        raise LabError(f"GRUB's core.img is {len(core)} bytes, more than the {gap} bytes before the partition")
    start = PARTITION_START_SECTOR * SECTOR
    sectors = DISK_BYTES // SECTOR - PARTITION_START_SECTOR
    disk_id = int(key[:8], 16)  # the MBR disk identifier; fixed per image, as a cloud image's is
    with open(raw, "wb") as disk:
        disk.truncate(DISK_BYTES)
        # boot.img's defaults already say "core image at sector 1, boot drive from the BIOS", and grub-mkimage has
        # filled in the core image's own length: no patching needed for this layout.
        disk.write(master_boot_record((grub_dir / "boot.img").read_bytes(), disk_id, PARTITION_START_SECTOR, sectors))
        disk.write(core)
    mke2fs_conf = work / "mke2fs.conf"
    mke2fs_conf.write_text(_MKE2FS_CONF)
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeadm-libvirt-lab:{key}"))
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", fs_uuid, "-E", f"offset={start}", "-d", str(tree), str(raw), f"{sectors * SECTOR // 1024}k"],
        log_path,
        env={"MKE2FS_CONFIG": str(mke2fs_conf)},
    )
    # Not compressed: reading compressed clusters cost ~10 s per guest boot under TCG.
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / DISK_NAME)], log_path)
    raw.unlink()
    mke2fs_conf.unlink()


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
    """Copy .debs not yet in ``target``; each appears by a rename, so a concurrent build never sees half a file."""
    for deb in source.glob("*.deb"):
        if not (target / deb.name).exists():
            partial = target / f".{deb.name}.{os.getpid()}.part"
            shutil.copyfile(deb, partial)
            partial.rename(target / deb.name)


def _remove_stale_builds(cache_dir: Path) -> None:
    """Delete leftovers of builds (of any key) whose builder is gone: killed before it could clean up."""
    for leftover in [*cache_dir.glob(".build-*-*"), *cache_dir.glob(".old-*-*")]:
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


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    root = Path(path).resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # mountinfo escapes space, tab, newline and backslash as \ooo octal
        mount_point = Path(line.split()[4].encode().decode("unicode_escape"))
        if mount_point == root or root in mount_point.parents:
            found.append(mount_point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def assert_nothing_mounted_under(path: Path) -> None:
    """Detach whatever an interrupted debootstrap or chroot step left mounted, and refuse if any stays."""
    for mount_point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
    left = _mounts_under(path)
    if left:
        raise LabError(f"refusing to touch {path}: still mounted: {', '.join(map(str, left))}")


def _run(command: Sequence[str], log_path: Path, details: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a build step with its output in the build log; on failure print the log's tail and raise a one-line error."""
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        full_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", **(env or {})}
        result = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    if result.returncode != 0:
        for path in (log_path, details):
            if path is not None and path.exists():
                tail = path.read_text(errors="replace").splitlines()[-30:]
                print(f"--- last lines of {path}:\n" + "\n".join(tail), file=sys.stderr, flush=True)
        raise LabError(f"guest image build step failed (exit {result.returncode}): {' '.join(command[:3])}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _one_line_source(line: str) -> tuple[str, str] | None:
    """(uri, suite) of a ``deb [options] uri suite components`` line, else None."""
    words = line.split("#", 1)[0].split()
    if words[:1] != ["deb"]:
        return None
    words = words[1:]
    if words and words[0].startswith("["):
        while words and not words[0].endswith("]"):
            words.pop(0)
        words = words[1:]
    return (words[0], words[1]) if len(words) >= 2 else None


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = [{}]
    last_key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            stanzas.append({})
        elif line[0] in " \t" and last_key:
            stanzas[-1][last_key] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            last_key = name.strip().lower()
            stanzas[-1][last_key] = value.strip()
    return [stanza for stanza in stanzas if stanza]


def _log(message: str) -> None:
    print(f"{_LOG_PREFIX} {message}", file=sys.stderr, flush=True)
