"""The kubeadm cluster on top of the VMs: one pulumi-command step per stage, per node, in a dependency graph.

Per node:       wait-for-boot -> os-prep -> container-runtime -> kube-packages;  wait-for-boot -> cluster-hosts
Control plane:  kube-packages -> kubeadm-init -> {kubeconfig, calico, join-command per worker}
Worker:         kube-packages -> prepull-images (while the control plane inits);
                prepull-images + its join-command + calico -> kubeadm-join -> membership (node Ready; drain/delete on removal)
                kubeadm-join -> join-token-cleanup (its token deleted: it never expires, and is needed no more)
Cluster:        every membership (or calico, with no workers) + every cluster-hosts -> cluster-ready -> smoke-test

Nodes run their stages in parallel; a step waits only for what it consumes. Every step's `triggers` holds the
domain ids it runs on, so a replaced VM re-runs its steps (its Command inputs would otherwise be unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command.remote as remote

from components import steps
from components.config import ClusterConfig, NodeSpec
from components.kubeadm_config import API_SERVER_PORT
from components.node import Node

# pulumi-command gives up after ~11 s of refused connections by default; a booting VM needs minutes. With the
# SDK's backoff (100 ms x1.5, capped at 5 s) 150 attempts is about 12 minutes. Like every bound below, the count
# and the per-dial timeout are multiplied by timeoutScale (the backoff is capped, so the wait grows with the count).
BOOT_DIAL_ERROR_LIMIT = 150
PER_DIAL_TIMEOUT_SECONDS = 15
# Every later step dials a node that wait-for-boot reached once, but that node may be booting again: a VM that
# `pulumi refresh` found stopped (powered off or crashed during an up) is started by the next up's domain update,
# which does not wait for the boot (terraform-provider-libvirt 0.8.3, resourceLibvirtDomainUpdate), and the step that
# had not completed dials it at once. A few dials would fail that step while the guest boots. Forty (about three
# minutes of the capped backoff at timeoutScale 1, scaled like the boot's) outlast a reboot, which skips cloud-init's
# first-boot work. The price: a node that is gone, or that presents another host key (pulumi-command retries that
# as a dial error), fails a step after those minutes instead of within one.
STEP_DIAL_ERROR_LIMIT = 40
STEP_PER_DIAL_TIMEOUT_SECONDS = 10
# Each step's Pulumi timeouts at timeoutScale 1, in seconds: longer than any bound inside its script (steps.py), so
# a slow step ends with the script's own clear message rather than being killed by the engine.
STEP_CREATE_SECONDS = 30 * 60
STEP_DELETE_SECONDS = 10 * 60


def step_timeouts(config: ClusterConfig) -> pulumi.CustomTimeouts:
    scale = config.timeouts
    return pulumi.CustomTimeouts(
        create=scale.duration(STEP_CREATE_SECONDS),
        update=scale.duration(STEP_CREATE_SECONDS),
        delete=scale.duration(STEP_DELETE_SECONDS),
    )


@dataclass(frozen=True)
class KubeadmClusterArgs:
    config: ClusterConfig
    nodes: Mapping[str, Node]
    ssh_private_key: pulumi.Output[str]


class KubeadmCluster(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str]
    join_command: pulumi.Output[str]
    control_plane_endpoint: str
    kubernetes_version: pulumi.Output[str]

    def __init__(self, name: str, args: KubeadmClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("kubeadm-libvirt:index:KubeadmCluster", name, None, opts)
        self._args = args
        config = args.config
        self._timeouts = step_timeouts(config)
        self._node_commands = steps.node_commands(config)
        control_plane = args.nodes[config.control_plane.name]

        prepared: dict[str, remote.Command] = {}
        hosts: list[remote.Command] = []
        for spec in config.nodes:
            prepared[spec.name], hosts_step = self._prepare_node(spec, args.nodes[spec.name])
            hosts.append(hosts_step)
        cp_packages = prepared[control_plane.spec.name]
        cp_triggers = [control_plane.domain_id]

        init = self._step(control_plane, "kubeadm-init", steps.kubeadm_init(config), [cp_packages], cp_triggers)
        kubeconfig = self._step(
            control_plane, "kubeconfig", steps.READ_KUBECONFIG, [init], cp_triggers, secret_stdout=True
        )
        calico = self._step(control_plane, "calico", steps.calico(config), [init], cp_triggers)
        stack_join_command = self._step(
            control_plane, "kubeadm-join-command", steps.STACK_JOIN_COMMAND, [init], cp_triggers, secret_stdout=True
        )

        joined = [self._join_worker(spec, args.nodes[spec.name], control_plane, init, calico, prepared[spec.name])
                  for spec in config.workers]  # fmt: skip
        # Every membership already waits for Calico; with no workers, cluster-ready waits for it itself.
        ready = self._step(
            control_plane, "cluster-ready", steps.cluster_ready(config), [*(joined or [calico]), *hosts], cp_triggers
        )
        if config.kubernetes.smoke_test:
            self._step(control_plane, "smoke-test", steps.smoke_test(config), [ready], cp_triggers)

        self.kubeconfig = pulumi.Output.secret(kubeconfig.stdout)
        self.join_command = pulumi.Output.secret(stack_join_command.stdout)
        self.control_plane_endpoint = f"https://{control_plane.ip}:{API_SERVER_PORT}"
        # kube-packages prints the kubeadm version it installed: the exact patch when a minor was configured.
        self.kubernetes_version = cp_packages.stdout
        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "joinCommand": self.join_command,
                "controlPlaneEndpoint": self.control_plane_endpoint,
                "kubernetesVersion": self.kubernetes_version,
                "ready": ready.id,
            }
        )

    def _connection(self, node: Node, booting: bool) -> remote.ConnectionArgs:
        timeouts = self._args.config.timeouts
        if booting:
            dial_error_limit, per_dial_timeout = timeouts.seconds(BOOT_DIAL_ERROR_LIMIT), timeouts.seconds(PER_DIAL_TIMEOUT_SECONDS)
        else:
            dial_error_limit, per_dial_timeout = timeouts.seconds(STEP_DIAL_ERROR_LIMIT), timeouts.seconds(STEP_PER_DIAL_TIMEOUT_SECONDS)
        return remote.ConnectionArgs(
            host=node.ip,
            user=self._args.config.ssh.user,
            private_key=self._args.ssh_private_key,
            # Pinned: the key the stack generated for this node and installed through cloud-init. A host that
            # presents another key fails the step with a host key mismatch instead of receiving commands.
            host_key=node.host_public_key,
            dial_error_limit=dial_error_limit,
            per_dial_timeout=per_dial_timeout,
        )

    def _step(
        self,
        node: Node,
        step: str,
        create: str,
        depends_on: Sequence[pulumi.Resource],
        triggers: Sequence[pulumi.Input[str]],
        *,
        delete: pulumi.Input[str] | None = None,
        stdin: pulumi.Input[str] | None = None,
        secret_stdout: bool = False,
        deleted_with: pulumi.Resource | None = None,
        booting: bool = False,
    ) -> remote.Command:
        options = pulumi.ResourceOptions(
            parent=self,
            depends_on=list(depends_on),
            custom_timeouts=self._timeouts,
            deleted_with=deleted_with,
            # A step with a `delete` undoes itself on the same address: the old delete must run before the new
            # create, or replacing it would reset what was just set up.
            delete_before_replace=delete is not None,
            # stdout of these steps is a credential: encrypted in state, and never logged (logging=NONE below).
            additional_secret_outputs=["stdout"] if secret_stdout else None,
        )
        return remote.Command(
            f"{node.spec.name}-{step}",
            connection=self._connection(node, booting),
            create=create,
            delete=delete,
            stdin=stdin,
            triggers=list(triggers),
            # sshd drops unknown environment variables (AcceptEnv): inputs travel on the command line instead.
            add_previous_output_in_env=False,
            logging=remote.Logging.NONE if secret_stdout else remote.Logging.STDOUT_AND_STDERR,
            opts=options,
        )

    def _prepare_node(self, spec: NodeSpec, node: Node) -> tuple[remote.Command, remote.Command]:
        """The steps every node runs on its own: (the last of its chain, its /etc/hosts step)."""
        commands = self._node_commands
        triggers = [node.domain_id]
        boot = self._step(node, "wait-for-boot", commands.wait_for_boot, [], triggers, booting=True)
        hosts = self._step(node, "cluster-hosts", commands.hosts_file, [boot], triggers)
        prep = self._step(node, "os-prep", commands.os_prep, [boot], triggers)
        runtime = self._step(node, "container-runtime", commands.container_runtime, [prep], triggers)
        packages = steps.kube_packages(self._args.config, spec)
        return self._step(node, "kube-packages", packages, [runtime], triggers), hosts

    def _join_worker(
        self,
        spec: NodeSpec,
        worker: Node,
        control_plane: Node,
        init: remote.Command,
        calico: remote.Command,
        packages: remote.Command,
    ) -> remote.Command:
        config = self._args.config
        # A token per worker, minted on the control plane without an expiry and deleted as soon as the worker has
        # joined: a join retried hours later (its step re-created, this one not) still finds it, a worker added
        # days later gets its own, adding one changes no input of the others, and no token outlives its use.
        triggers = [worker.domain_id, control_plane.domain_id]
        token_step = f"{control_plane.spec.name}-{spec.name}-join-command"
        join_command = self._step(
            control_plane,
            f"{spec.name}-join-command",
            steps.join_token(config, spec, "mint"),
            [init],
            triggers,
            secret_stdout=True,
            # A worker removed (or replaced) before it joined would leave its token behind: delete it here. (The
            # token id is derived from the worker's name, so this needs no secret.)
            delete=steps.join_token(config, spec, "delete-if-reachable"),
            deleted_with=control_plane.domain,
        )
        # Off the critical path: the worker pulls its images while the control plane runs kubeadm init and Calico.
        prepull = self._step(
            worker, "prepull-images", self._node_commands.prepull_images, [packages], [worker.domain_id]
        )
        # Joins after the pod network, kubeadm's documented order (init, a pod network add-on, then join) and the
        # tutorial's. A node is Ready only with the CNI anyway, and a joined worker's kubelet, kube-proxy and
        # calico-node load the control plane while it installs Calico: on a host short of CPU (TCG, two cores) that
        # load kept Calico from coming up in the lab; on a fast host the join starts a minute or two later.
        join = self._step(
            worker,
            "kubeadm-join",
            steps.kubeadm_join(config, spec, token_step),
            [prepull, join_command, calico],
            # A new control plane is a new cluster: the worker is reset and joins again.
            triggers,
            stdin=pulumi.Output.secret(join_command.stdout),
            delete=self._node_commands.reset_node,
            # When the VM itself goes, there is nothing to reset (and nothing to connect to).
            deleted_with=worker.domain,
        )
        # The token has done its job once the worker has joined: delete it. Its stdin is the join command the worker
        # was given (the join step's own input), so this runs again whenever a new token is minted and handed to
        # the worker, deletes exactly that token, and waits only for the join.
        self._step(
            control_plane,
            f"{spec.name}-join-token-cleanup",
            steps.join_token(config, spec, "delete"),
            [join],
            triggers,
            stdin=pulumi.Output.secret(join.stdin),
            deleted_with=control_plane.domain,
        )
        # The worker as a member of the cluster: created once its Node is Ready; removing the worker from `nodes`
        # drains and deletes the Node through the control plane (skipped when the control plane goes too). When the
        # worker's VM is replaced (a domain recreated after it was lost), this is replaced after the new VM joined
        # under the same name: the hook knows its own VM's UUID and leaves the new VM's Node alone.
        # After the join, hence after Calico: a failed Calico step skips this wait instead of it running out its
        # (scaled) bound.
        return self._step(
            control_plane,
            f"{spec.name}-membership",
            steps.node_ready(config, spec),
            [join],
            triggers,
            delete=worker.domain_id.apply(lambda domain_uuid: steps.drain_node(config, spec, domain_uuid)),
            deleted_with=control_plane.domain,
        )
