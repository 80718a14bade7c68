"""A running lab for the tests that need one: the toolchain, the guest image, optionally the Kubernetes mirror (built
or reused from the cache), a lab host of the test's own, and this process inside its network namespace so the CLI,
the plugins' SSH and the tests' own connections run there (lab/netns.py). Shared by the engine and cluster tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    toolchain: Toolchain
    image: Path
    host: host.LabHost
    engine: Engine
    mirror: Mirror | None = None  # served in the host's namespace when the session asked for it


@contextmanager
def running_lab(host_name: str, state_dir: Path, *, with_mirror: bool = False) -> Iterator[Lab]:
    """The lab for a test module; the host is stopped (every VM, network and process of it gone) afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the lab tests need root (CI runs .ci/run as root)")
        pytest.skip("the lab tests need root: they start libvirtd in a network namespace")
    try:
        toolchain = ensure_toolchain()
        image = build_guest_image()
        mirror = ensure_mirror() if with_mirror else None
        lab_host = host.start(host_name)
    except LabError as error:
        pytest.fail(f"the lab could not start: {error}")
    try:
        with netns.joined(lab_host.namespace):
            if mirror is not None:
                mirror_services.start(lab_host, mirror)
            yield Lab(toolchain, image, lab_host, Engine(toolchain, backend_dir=state_dir), mirror)
    finally:
        host.stop(host_name)
