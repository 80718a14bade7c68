"""Shared fixtures: a real SSH key pair, and runs of the real program under Pulumi's mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.mockrun import StackRun, run_program
from tests.lab_session import LabSession, running_lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: the real Pulumi engine on a lab host (toolchain build, libvirt, TCG guests)")
    config.addinivalue_line("markers", "cluster: the mission on lab VMs from the lab mirror (up to a Ready Calico cluster and back); deselected unless --cluster")
    config.addinivalue_line("markers", "mirror: reads the built lab mirror (python3 -m lab mirror build: Kubernetes from Go modules)")
    config.addinivalue_line("markers", "labhost: starts real lab hosts (network namespace, libvirtd, a TCG domain); needs root")
    config.addinivalue_line(
        "markers",
        "scaling: adds and removes a worker on the live lab cluster, joins one by hand (an hour more under TCG); deselected unless --scaling",
    )
    config.addinivalue_line(
        "markers",
        "faults: the mission's faults on the live lab cluster (a worker's VM lost, one powered off mid-join); deselected unless --faults",
    )
    # pulumi_command's package import warns about its deprecated CopyFile resource, which the program does not use.
    config.addinivalue_line("filterwarnings", "ignore:This resource is deprecated:DeprecationWarning")


# Each runs only when asked for: the mission (`cluster`) takes about 40 minutes on the machine the README's first
# figures come from and well over an hour on a slower one of the same size, which with the rest of the suite does
# not fit CI's 90 minutes; its scaling tests add about an hour, its two fault tests about as much (README, Tests). --scaling and
# --faults imply --cluster: they run on the mission's live cluster.
OPT_IN_MARKERS = ("cluster", "scaling", "faults")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true", help="also run the mission (tests marked cluster: tests/test_cluster.py)")
    parser.addoption("--scaling", action="store_true", help="also run the mission's add and remove of a worker and its join by hand (implies --cluster)")
    parser.addoption("--faults", action="store_true", help="also run the mission's faults: a worker VM lost, one powered off mid-join (implies --cluster)")


def opted_in(config: pytest.Config) -> set[str]:
    chosen = {marker for marker in OPT_IN_MARKERS if config.getoption(f"--{marker}")}
    if chosen & {"scaling", "faults"}:
        chosen.add("cluster")
    return chosen


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of the opt-in markers are deselected (reported as such, never as passed) unless asked for."""
    left_out = set(OPT_IN_MARKERS) - opted_in(config)
    deselected = [item for item in items if any(item.get_closest_marker(marker) for marker in left_out)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@dataclass(frozen=True)
class KeyPair:
    private_key_path: Path
    public_key: str

    @property
    def private_key(self) -> str:
        return self.private_key_path.read_text()


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A real ed25519 pair from ssh-keygen, as a user would configure it."""
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen is missing: install openssh-client (.ci/run does)")
    directory = tmp_path_factory.mktemp("ssh")
    path = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubeadm-libvirt-test", "-f", str(path)], check=True)
    return KeyPair(private_key_path=path, public_key=(directory / "id_ed25519.pub").read_text().strip())


@pytest.fixture(scope="session")
def ca_certificate(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real self-signed CA certificate (PEM) from openssl, as a private registry's CA would be configured."""
    directory = tmp_path_factory.mktemp("ca")
    key, cert = directory / "ca.key", directory / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=kubeadm-libvirt test CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert.read_text()


@pytest.fixture(scope="session")
def built_kubeadm() -> Path:
    """The real kubeadm of the lab mirror's Kubernetes pin, built from k8s.io/kubernetes (lab/mirror.py) and cached
    outside the clone: the whole mirror's when it is built, else kubeadm alone (about 90 s cold, then instant)."""
    from lab.errors import LabError
    from lab.mirror import ensure_kubeadm

    try:
        return ensure_kubeadm()
    except LabError as error:
        pytest.fail(f"cannot build kubeadm for the check: {error}")


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """One lab host for every test that needs one (tests/lab_session.py says why one per process)."""
    with running_lab(f"tests-{os.getpid()}", tmp_path_factory.mktemp("consoles")) as session:
        yield session


@pytest.fixture
def dev_run() -> StackRun:
    """The dev stack exactly as committed (the stack generates its SSH key pair)."""
    return run_program("dev")


@pytest.fixture
def dev_run_with_key(key_pair: KeyPair) -> StackRun:
    """The dev stack with a configured key pair, the private half set with --secret."""
    return run_program(
        "dev",
        overrides={"sshPublicKey": key_pair.public_key, "sshPrivateKey": key_pair.private_key},
        secret_keys=["sshPrivateKey"],
    )
