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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import host, mirror_services, netns
from lab.engine import Engine
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
    mirror: Mirror | None = None  # served in the host's namespace when the module asked for it


@dataclass
class LabSession:
    toolchain: Toolchain
    image: Path
    host: host.LabHost
    _mirror: Mirror | None = field(default=None, init=False)

    def module_lab(self, state_dir: Path, *, with_mirror: bool = False) -> Lab:
        mirror = self._served_mirror() if with_mirror else None
        return Lab(self.toolchain, self.image, self.host, Engine(self.toolchain, backend_dir=state_dir), mirror)

    def _served_mirror(self) -> Mirror:
        if self._mirror is None:
            try:
                mirror = ensure_mirror()
                mirror_services.start(self.host, mirror)
            except LabError as error:
                pytest.fail(f"the lab mirror could not be built or served: {error}")
            self._mirror = mirror
        return self._mirror


@contextmanager
def running_lab(host_name: str) -> Iterator[LabSession]:
    """The session's lab; the host is stopped (every VM, network and process of it gone) afterwards."""
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
        with netns.joined(lab_host.namespace):
            yield LabSession(toolchain, image, lab_host)
    finally:
        host.stop(host_name)
