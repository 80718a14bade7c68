"""The skeleton program of bench/program_eval.py: the real program's resources with trivial inputs.

Run like `__main__.py` is (runpy, under the same mocks), so both are evaluated the way the Pulumi language host
evaluates a program. bench/program_eval.py passes, as globals:
    SHAPE: [type token, name, parent name, input keys, dependency names] per resource, parents and dependencies
           first (from a mock run of the real program);
    TYPED: True for the provider classes with only their required inputs and the program's dependency edges as
           `depends_on`; False for bare CustomResources, every input key set to a constant, no edges.
"""

import pulumi
import pulumi_command.remote as remote
import pulumi_libvirt as libvirt
import pulumi_tls as tls

# Type token -> a constructor of that resource with only its required inputs, all constants.
TRIVIAL_RESOURCES = {
    "tls:index/privateKey:PrivateKey": lambda name, opts: tls.PrivateKey(name, algorithm="ED25519", opts=opts),
    "libvirt:index/network:Network": lambda name, opts: libvirt.Network(name, opts=opts),
    "libvirt:index/volume:Volume": lambda name, opts: libvirt.Volume(name, opts=opts),
    "libvirt:index/cloudInitDisk:CloudInitDisk": lambda name, opts: libvirt.CloudInitDisk(name, opts=opts),
    "libvirt:index/domain:Domain": lambda name, opts: libvirt.Domain(name, opts=opts),
    "command:remote:Command": lambda name, opts: remote.Command(
        name, connection=remote.ConnectionArgs(host="x"), opts=opts
    ),
}
COMPONENT_PREFIX = "kubeadm-libvirt:"

missing = {type_ for type_, *_ in SHAPE if not type_.startswith(COMPONENT_PREFIX)} - set(TRIVIAL_RESOURCES)  # noqa: F821
if missing:
    raise KeyError(f"bench/skeleton_program.py has no trivial constructor for {sorted(missing)}: add one")

created: dict[str, pulumi.Resource] = {}
for type_, name, parent, keys, dependencies in SHAPE:  # noqa: F821
    opts = pulumi.ResourceOptions(
        parent=created.get(parent), depends_on=[created[d] for d in dependencies] if TYPED else None  # noqa: F821
    )
    if type_.startswith(COMPONENT_PREFIX):
        created[name] = pulumi.ComponentResource(type_, name, None, opts)
    elif TYPED:  # noqa: F821
        created[name] = TRIVIAL_RESOURCES[type_](name, opts)
    else:
        created[name] = pulumi.CustomResource(type_, name, dict.fromkeys(keys, "x"), opts)
