"""One VM: its copy-on-write disk, its cloud-init disk and its libvirt domain."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

import pulumi_tls as tls

from components.cloudinit import HostKey, NodeSeed, render_seed
from components.config import Accelerator, NetworkSpec, NodeSpec, TimeoutScale

GIB = 1024**3
# Ubuntu cloud images hang at boot without a serial console (cloud-images bug 1573095).
SERIAL_CONSOLE = {"type": "pty", "target_port": "0", "target_type": "serial"}
# The provider gives every domain SPICE graphics unless told otherwise, and QEMU builds without SPICE exist (RHEL 9
# and its rebuilds dropped it): VNC is in every QEMU. Loopback only; the serial console is what the nodes use.
GRAPHICS = {"type": "vnc", "autoport": True, "listen_type": "address", "listen_address": "127.0.0.1"}
# Creating a domain includes the provider's wait for it to start; scaled by timeoutScale.
DOMAIN_CREATE_SECONDS = 15 * 60


def domain_machine(accelerator: Accelerator) -> tuple[str, dict[str, str] | None]:
    """(libvirt domain type, Domain `cpu` or None) for the accelerator.

    kvm: hardware virtualization, and the host's own CPU passed through (fastest; every instruction set the host has).
    tcg: libvirt domain type "qemu" is QEMU's software emulation (TCG), for hosts whose /dev/kvm is missing or
    unusable (nested virtualization without VT-x/AMD-V). host-passthrough needs KVM, so it must go. A named model
    (cpu mode "custom" with <model>) would be the choice, but pulumi_libvirt's DomainCpuArgs can only set `mode`
    (no model), and "custom" without a model means nothing; the one other way, an XSLT over the generated domain
    XML, would be untested XML patching on every domain. So no `cpu` at all: libvirt leaves the choice to QEMU,
    whose default x86_64 model under TCG is qemu64 (x86-64 baseline, no x86-64-v2 instructions).
    """
    if accelerator == "tcg":
        return "qemu", None
    return "kvm", {"mode": "host-passthrough"}


@dataclass(frozen=True)
class NodeArgs:
    spec: NodeSpec
    network: NetworkSpec
    ssh_user: str
    authorized_key: pulumi.Input[str]  # the login key's public half
    base_volume_id: pulumi.Input[str]
    network_id: pulumi.Input[str]
    pool: str
    accelerator: Accelerator
    timeouts: TimeoutScale
    protect: bool = False


class Node(pulumi.ComponentResource):
    """A libvirt VM that boots once into its static address, hostname and SSH key."""

    ip: str
    domain_id: pulumi.Output[str]
    host_public_key: pulumi.Output[str]

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("kubeadm-libvirt:index:Node", name, None, opts)
        spec = args.spec
        # The node's SSH host key, made here and installed by cloud-init, so every connection can pin it.
        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
        self.host_public_key = host_key.public_key_openssh.apply(str.strip)
        # Output.secret states it here rather than relying on the provider's schema: the seed carries this key.
        host_private_key = pulumi.Output.secret(host_key.private_key_openssh)
        seed = pulumi.Output.all(args.authorized_key, host_private_key, host_key.public_key_openssh).apply(
            lambda keys: render_seed(spec, args.network, args.ssh_user, keys[0], HostKey(keys[1], keys[2]))
        )
        # The seed's digest is part of the disk and ISO names: a new seed renames both, which replaces them, and
        # the new disk replaces the domain. cloud-init only runs on a first boot, so a changed seed must mean a
        # fresh VM, never a swapped CD-ROM on a running one (terraform-provider-libvirt #931).
        # The seed is secret (it carries the host's private key); its digest and the non-secret files are not.
        domain_type, cpu = domain_machine(args.accelerator)
        seed_tag = pulumi.Output.unsecret(seed.apply(lambda s: s.digest[:10]))
        # Explicit names make the bridge replace these delete-first; delete_before_replace says so outright.
        replace_first = pulumi.ResourceOptions(parent=self, delete_before_replace=True, protect=args.protect)

        self.cloud_init_disk = libvirt.CloudInitDisk(
            f"{name}-cloudinit",
            name=seed_tag.apply(lambda tag: f"{spec.name}-cloudinit-{tag}.iso"),
            pool=args.pool,
            user_data=seed.apply(lambda s: s.user_data),
            meta_data=pulumi.Output.unsecret(seed.apply(lambda s: s.meta_data)),
            network_config=pulumi.Output.unsecret(seed.apply(lambda s: s.network_config)),
            opts=replace_first,
        )
        self.disk = libvirt.Volume(
            f"{name}-disk",
            name=seed_tag.apply(lambda tag: f"{spec.name}-{tag}.qcow2"),
            pool=args.pool,
            base_volume_id=args.base_volume_id,  # copy-on-write over the one shared base image
            size=spec.disk_gib * GIB,
            format="qcow2",
            opts=replace_first,
        )
        self.domain = libvirt.Domain(
            f"{name}-domain",
            name=spec.name,
            vcpu=spec.vcpus,
            memory=spec.memory_mib,
            type=domain_type,
            cpu=cpu,
            cloudinit=self.cloud_init_disk.id,
            disks=[{"volume_id": self.disk.id}],
            # No `addresses` and no `wait_for_lease`: both are DHCP features. The address is static (netplan in
            # the seed) and SSH dial retries are the readiness gate.
            network_interfaces=[{"network_id": args.network_id, "mac": spec.mac, "wait_for_lease": False}],
            consoles=[SERIAL_CONSOLE],
            graphics=GRAPHICS,
            autostart=True,
            opts=pulumi.ResourceOptions.merge(
                replace_first,
                pulumi.ResourceOptions(
                    replace_on_changes=["cloudinit"],
                    custom_timeouts=pulumi.CustomTimeouts(create=args.timeouts.duration(DOMAIN_CREATE_SECONDS)),
                ),
            ),
        )
        self.spec = spec
        self.ip = str(spec.ip)
        self.domain_id = self.domain.id
        self.register_outputs(
            {
                "name": spec.name,
                "role": spec.role,
                "ip": self.ip,
                "mac": spec.mac,
                "domainId": self.domain.id,
                "hostPublicKey": self.host_public_key,
            }
        )
