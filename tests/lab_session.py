"""The lab for the tests that need one: the toolchain, the guest image, one lab host for the whole test session, and
this process inside its network namespace, so the CLI, the plugins' SSH and the tests' own connections run there
(lab/netns.py). Shared by the engine and cluster tests (tests/conftest.py, `lab_session`).

One host and one namespace per process, joined once: gRPC's threads (the Automation API's language server talks to
the CLI over gRPC on 127.0.0.1) live on in the namespace they were started in, so a second namespace joined later in
the same process cannot reach a CLI started there (seen: "failed to connect ... 127.0.0.1: Connection refused").
Each test module gets its own state backend and stacks on the shared host, and leaves the host empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pulumi import automation as auto

from lab import host, mirror_services, netns
from lab.calico import ensure_calico
from lab.consoles import ConsoleRecorder, recording
from lab.engine import REFRESH_EXCLUDES, Engine, deadline, release
from lab.errors import LabError
from lab.image import build_guest_image
from lab.mirror import Mirror, ensure_mirror
from lab.toolchain import Toolchain, ensure_toolchain


@dataclass(frozen=True)
class Lab:
    """What one test module works with: the session's host, with a state backend of the module's own."""

    toolchain: Toolchain
    image: Path
    host: host.LabHost
    engine: Engine
    consoles: ConsoleRecorder  # every VM's serial console, for the failure messages of VMs that never answered
    mirror: Mirror | None = None  # served in the host's namespace when the module asked for it

    def bounded_up(
        self,
        stack: auto.Stack,
        seconds: float,
        output: list[str],
        events: list[auto.EngineEvent] | None = None,
        replace: Sequence[str] = (),
    ) -> str:
        """`pulumi up --continue-on-error` of `stack` within `seconds` (with `--replace` of the URNs in `replace`), its
        output appended to `output` (and its engine events to `events`, if given); the CLI's error, "" when the up
        succeeded. After a failure the stack is unlocked (a CLI killed at the deadline leaves its lock) and the
        consoles of the nodes that never answered are printed, for a reader of the test log."""
        try:
            with deadline(seconds, f"pulumi up of stack {stack.name}"):
                stack.up(
                    on_output=output.append,
                    on_event=events.append if events is not None else None,
                    continue_on_error=True,
                    replace=list(replace) or None,
                )
        except auto.CommandError as error:
            release(stack)
            print(self.unbooted_consoles(state_resources(stack)))
            return str(error)
        return ""

    def bounded_refresh(self, stack: auto.Stack, seconds: float) -> list[auto.EngineEvent]:
        """`pulumi refresh --exclude` (the README's: the cloud-init disks left out, lab/engine.py says why) of `stack`
        within `seconds`; its engine events. After a failure the stack is unlocked and the CLI's error raised."""
        events: list[auto.EngineEvent] = []
        try:
            with deadline(seconds, f"pulumi refresh of stack {stack.name}"):
                stack.refresh(on_output=print, on_event=events.append, exclude=list(REFRESH_EXCLUDES))
        except auto.CommandError:
            release(stack)
            raise
        return events

    def leave_empty(self, stack: auto.Stack, seconds: float) -> None:
        """Destroy what `stack` holds, so the session's host is empty for the next module, also after a test failed.
        When the destroy cannot finish (a CLI killed at its deadline, a VM that hung), the host is cleared by hand
        and the destroy's error raised: the next module still starts clean, and the failure is not hidden."""
        if not state_resources(stack):
            return
        release(stack)  # the lock of a CLI that was killed at its deadline
        try:
            with deadline(seconds, f"pulumi destroy of stack {stack.name} (teardown)"):
                stack.destroy(on_output=print)
        except auto.CommandError:
            host.clear(self.host)
            raise

    def unbooted_consoles(self, resources: Mapping[str, dict]) -> str:
        """What the consoles of the nodes whose domain exists but whose wait-for-boot never completed printed last
        (`resources`: the stack's state, name -> resource); empty when every node booted."""
        nodes = [name.removesuffix("-domain") for name in resources if name.endswith("-domain")]
        return "\n".join(
            f"--- {node} never answered its wait-for-boot; its console ended with:\n{self.consoles.tail(node)}"
            for node in nodes
            if f"{node}-wait-for-boot" not in resources
        )


@dataclass
class LabSession:
    toolchain: Toolchain
    image: Path
    host: host.LabHost
    consoles: ConsoleRecorder
    _mirror: Mirror | None = field(default=None, init=False)

    def module_lab(self, state_dir: Path, *, with_mirror: bool = False) -> Lab:
        mirror = self._served_mirror() if with_mirror else None
        return Lab(self.toolchain, self.image, self.host, Engine(self.toolchain, backend_dir=state_dir), self.consoles, mirror)

    def _served_mirror(self) -> Mirror:
        if self._mirror is None:
            try:
                mirror = ensure_mirror()
                mirror_services.start(self.host, mirror, ensure_calico())
            except LabError as error:
                pytest.fail(f"the lab mirror could not be built or served: {error}")
            self._mirror = mirror
        return self._mirror


def state_resources(stack: auto.Stack) -> dict[str, dict]:
    """The stack's resources as its state holds them, by name."""
    deployment = stack.export_stack().deployment
    return {resource["urn"].rsplit("::", 1)[1]: resource for resource in deployment.get("resources", [])}


@contextmanager
def running_lab(host_name: str, consoles_dir: Path) -> Iterator[LabSession]:
    """The session's lab, every VM's console recorded under `consoles_dir`; the host is stopped (every VM, network
    and process of it gone) afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the lab tests need root (CI runs .ci/run as root)")
        pytest.skip("the lab tests need root: they start libvirtd in a network namespace")
    try:
        toolchain = ensure_toolchain()
        image = build_guest_image()
        lab_host = host.start(host_name)
    except LabError as error:
        pytest.fail(f"the lab could not start: {error}")
    try:
        with netns.joined(lab_host.namespace), recording(lab_host, consoles_dir) as consoles:
            yield LabSession(toolchain, image, lab_host, consoles)
    finally:
        host.stop(host_name)
