"""Run the real program (`__main__.py`) under Pulumi's mocks and record what it registers.

The mocks stand in for the engine and the providers only: the SDK, the program, its config handling and every
renderer run for real. Used by the tests, the offline plan (`python -m components.plan`) and the benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import runpy
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.project_files import PROJECT_ROOT, merged_config, project_name

# How the Python SDK marks a secret value inside serialized properties.
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def unwrap_secret(value: Any) -> tuple[Any, bool]:
    """(plain value, whether it was marked secret) for one serialized property value."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE:
        return value.get("value"), True
    return value, False


def reveal(value: Any) -> Any:
    """The value with every secret marker removed, recursively (for assertions on content)."""
    plain, _ = unwrap_secret(value)
    if isinstance(plain, dict):
        return {key: reveal(item) for key, item in plain.items()}
    if isinstance(plain, list):
        return [reveal(item) for item in plain]
    return plain


def redact(value: Any) -> Any:
    """The value with every secret replaced by "[secret]", recursively (for display)."""
    plain, secret = unwrap_secret(value)
    if secret:
        return "[secret]"
    if isinstance(plain, dict):
        return {key: redact(item) for key, item in plain.items()}
    if isinstance(plain, list):
        return [redact(item) for item in plain]
    return plain


@dataclass(frozen=True)
class Registration:
    """One registered resource: what the engine would receive, options included."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    depends_on: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    delete_before_replace: bool
    replace_on_changes: tuple[str, ...]
    additional_secret_outputs: tuple[str, ...]
    ignore_changes: tuple[str, ...]
    protect: bool
    deleted_with: str
    custom_timeouts: dict[str, str]

    def input(self, key: str) -> Any:
        return reveal(self.inputs.get(key))

    def is_secret(self, key: str) -> bool:
        return unwrap_secret(self.inputs.get(key))[1]

    @property
    def all_dependencies(self) -> frozenset[str]:
        """URNs this resource waits for: explicit depends_on plus every input's dependencies."""
        urns = set(self.depends_on)
        for dependencies in self.property_dependencies.values():
            urns.update(dependencies)
        return frozenset(urns)


# NoCloud file name -> the CloudInitDisk input that carries it.
SEED_FILE_INPUTS = {"user-data": "userData", "meta-data": "metaData", "network-config": "networkConfig"}


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool


@dataclass
class StackRun:
    """Everything one mock run produced."""

    registrations: list[Registration]
    outputs: dict[str, StackOutput] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_token]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.registrations}

    def seed_files(self, node: str) -> dict[str, str]:
        """The files of a node's cidata disk, by their NoCloud names, secrets revealed."""
        disk = self.named(f"{node}-cloudinit")
        return {file: disk.input(key) for file, key in SEED_FILE_INPUTS.items()}


def _fake_public_key(seed: str) -> str:
    # A well-formed ed25519 public key line: 4-byte length + "ssh-ed25519" + 4-byte length + 32 key bytes.
    body = hashlib.sha256(seed.encode()).digest()
    blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + body
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + "\n"


# (private key, public key) in OpenSSH formats for a tls PrivateKey of the given resource name.
KeyFactory = Callable[[str], tuple[str, str]]


def fake_key_pair(name: str) -> tuple[str, str]:
    """Deterministic stand-ins (the default): golden files stay stable; no VM ever sees these."""
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-" + name + "\n-----END OPENSSH PRIVATE KEY-----\n"
    return private, _fake_public_key(name)


def mock_domain_uuid(resource_name: str) -> str:
    """The id a mock run gives the libvirt Domain named `resource_name`: a UUID, as the real provider's (drain-node.sh
    checks it as one), derived from the name so golden files stay stable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeadm-libvirt:mock-domain:{resource_name}"))


class ProgramMocks(pulumi.runtime.Mocks):
    """Echo inputs back as outputs, with deterministic ids and plausible computed outputs."""

    def __init__(self, command_stdout: Mapping[str, str] | None = None, key_factory: KeyFactory = fake_key_pair) -> None:
        self.command_stdout = dict(command_stdout or {})
        self.key_factory = key_factory

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        outputs = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            outputs["private_key_openssh"], outputs["public_key_openssh"] = self.key_factory(args.name)
        if args.typ == "command:remote:Command":
            outputs["stdout"] = self._stdout_for(args.name)
            outputs["stderr"] = ""
        if args.typ == "libvirt:index/domain:Domain":
            return mock_domain_uuid(args.name), outputs  # as the provider: the domain's libvirt UUID
        return f"{args.name}-id", outputs

    def _stdout_for(self, name: str) -> str:
        for suffix, stdout in self.command_stdout.items():
            if name.endswith(suffix):
                return stdout
        return ""

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Records every RegisterResource request: resource options are invisible to Mocks.new_resource."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # As the engine names resources: the type part is the parent's whole type chain, `$`, then the resource's
        # own type; children of the stack have no prefix. (The SDK's MockMonitor prefixes the parent's own type
        # only, and the stack's: its URNs differed from the engine's below the first level.)
        if parent:
            parent_chain = parent.split("::")[2]
            if parent_chain != "pulumi:pulumi:Stack":
                type_ = f"{parent_chain}${type_}"
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object, keep_unknowns=True)
            timeouts = request.customTimeouts
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=dict(inputs),
                    depends_on=tuple(request.dependencies),
                    property_dependencies={
                        key: tuple(value.urns) for key, value in request.propertyDependencies.items()
                    },
                    delete_before_replace=request.deleteBeforeReplace,
                    replace_on_changes=tuple(request.replaceOnChanges),
                    additional_secret_outputs=tuple(request.additionalSecretOutputs),
                    ignore_changes=tuple(request.ignoreChanges),
                    protect=request.protect,
                    deleted_with=request.deletedWith,
                    custom_timeouts={
                        phase: getattr(timeouts, phase)
                        for phase in ("create", "update", "delete")
                        if timeouts is not None and getattr(timeouts, phase)
                    },
                )
            )
        return response


# Command stdout the mocks fabricate, keyed by resource-name suffix, so secret outputs have content to check.
DEFAULT_COMMAND_STDOUT = {
    "-join-command": "kubeadm join 192.168.141.130:6443 --token abcdef.0123456789abcdef "
    "--discovery-token-ca-cert-hash sha256:" + "0" * 64,
    "-kubeconfig": "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.168.141.130:6443\n"
    "  name: kubernetes\n",
}


@dataclass(frozen=True)
class CliConfig:
    """What the Pulumi CLI hands a program: project, stack, every config value as a string, which ones are secret."""

    project: str
    stack: str
    values: dict[str, str]
    secret_keys: tuple[str, ...] = ()


def cli_config(
    stack: str = "dev", overrides: Mapping[str, Any] | None = None, secret_keys: Iterable[str] = ()
) -> CliConfig:
    """The merged config of `stack` (plus overrides, and `secret_keys` marked secret), as the CLI would pass it."""
    project = project_name()
    secrets = tuple(key if ":" in key else f"{project}:{key}" for key in secret_keys)
    return CliConfig(project, stack, merged_config(stack, overrides), secrets)


def run_program(
    stack: str = "dev",
    overrides: Mapping[str, Any] | None = None,
    secret_keys: Iterable[str] = (),
    preview: bool = False,
    command_stdout: Mapping[str, str] | None = None,
    key_factory: KeyFactory = fake_key_pair,
) -> StackRun:
    """Run __main__.py with the merged config of `stack` (plus overrides) under mocks; return what it did.

    `secret_keys` are short or full config keys to mark secret, as `pulumi config set --secret` would.
    Raises whatever the program raises (e.g. pulumi.RunError for invalid config).
    """
    config = cli_config(stack, overrides, secret_keys)
    return run_with_config(config, preview=preview, command_stdout=command_stdout, key_factory=key_factory)


# The program the CLI runs; bench/skeleton_program.py is run the same way, with its inputs as globals.
PROGRAM_FILE = PROJECT_ROOT / "__main__.py"


def run_with_config(
    config: CliConfig,
    preview: bool = False,
    command_stdout: Mapping[str, str] | None = None,
    key_factory: KeyFactory = fake_key_pair,
    program_file: Path = PROGRAM_FILE,
    program_globals: Mapping[str, Any] | None = None,
) -> StackRun:
    """Run a program file (__main__.py unless told) under mocks with config already merged: only what a real run
    does in the program's process."""
    pulumi.runtime.set_all_config(config.values, secret_keys=list(config.secret_keys))
    mocks = ProgramMocks(DEFAULT_COMMAND_STDOUT if command_stdout is None else command_stdout, key_factory)
    monitor = RecordingMonitor(mocks)
    set_root_resource(None)  # a fresh root stack per run, so runs in one process do not share state
    pulumi.runtime.set_mocks(mocks, project=config.project, stack=config.stack, preview=preview, monitor=monitor)
    root = pulumi.runtime.get_root_resource()

    def program() -> None:
        runpy.run_path(str(program_file), init_globals=dict(program_globals or {}), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    outputs = {name: _resolve_output(value) for name, value in getattr(root, "outputs", {}).items()}
    return StackRun(registrations=monitor.registrations, outputs=outputs)


def _resolve_output(value: Any) -> StackOutput:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future(with_unknowns=True))
    secret = _sync_await(output.is_secret())
    return StackOutput(value=resolved, secret=secret)
