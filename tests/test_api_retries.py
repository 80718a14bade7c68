"""A busy API server, at the script level: the Calico and smoke-test steps send a request again when the API server
times out (as a TCG control plane did in CI: `Error from server (Timeout)` on the Calico CRDs when the step re-ran),
and stop at once, naming what failed, on an error a retry cannot cure.

The scripts run exactly as the dev stack sends them (from a mock run), /etc/kubernetes moved into a temporary
directory, with a fake kubectl and curl on PATH: the fake kubectl answers the first FAIL_APPLIES applies with
FAIL_WITH and every later one as the API server would, and records each call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.mockrun import StackRun
from tests.node_sandbox import install_fakes, run_sandboxed

MASTER = "kubernetes-master"
SERVER_TIMEOUT = "Error from server (Timeout): Timeout: request did not complete within requested timeout - context deadline exceeded"
NOT_VALID = 'error: error validating "STDIN": error validating data: unknown field "spec.bogus"'

FAKE_KUBECTL = """#!{python}
import os, sys
args = [a for a in sys.argv[1:] if not a.startswith("--kubeconfig")]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(" ".join(args) + "\\n")
if "apply" in args:
    done = sum(1 for line in open(os.environ["CALLS"]) if " apply " in " " + line)
    if done <= int(os.environ.get("FAIL_APPLIES", "0")):
        sys.exit(os.environ["FAIL_WITH"])
    sys.stdin.read()
    print("applied")
elif "kustomize" in args:
    print(open(os.path.join(args[-1], "tigera-operator.yaml")).read())
elif "create" in args:  # --dry-run=client: the object as YAML
    print("kind: " + args[args.index("create") + 1])
elif "jsonpath={{.spec.ports[0].nodePort}}" in args:
    print(30080)
elif "jsonpath={{.items[*].metadata.name}}" in args:
    print("apiserver calico")
"""

# -o FILE: the operator manifest calico.sh downloads; otherwise the page smoke-test.sh fetches through each node.
FAKE_CURL = """#!/bin/bash
for ((i = 1; i <= $#; i++)); do
  if [[ ${!i} == -o ]]; then j=$((i + 1)); printf 'spec:\\n  containers:\\n  - image: quay.io/tigera/operator:v1.40.0\\n' >"${!j}"; exit 0; fi
done
echo '<title>Welcome to nginx!</title>'
"""


class ControlPlane:
    def __init__(self, root: Path) -> None:
        self.root = root
        install_fakes(root / "bin", {"kubectl": FAKE_KUBECTL.format(python=sys.executable), "curl": FAKE_CURL})
        (root / "etc/kubernetes").mkdir(parents=True)
        (root / "etc/kubernetes/admin.conf").write_text("fake admin kubeconfig\n")
        self.calls = root / "calls"

    def run(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_sandboxed(command, self.root, self.root / "bin", {**env, "CALLS": str(self.calls)}, timeout=120)

    def applies(self) -> list[str]:
        return [line for line in self.calls.read_text().splitlines() if " apply " in f" {line} "]


@pytest.fixture
def control_plane(tmp_path: Path) -> ControlPlane:
    return ControlPlane(tmp_path)


def step(run: StackRun, name: str) -> str:
    return run.named(f"{MASTER}-{name}").input("create")


def test_calico_sends_an_apply_again_after_the_api_server_timed_out(control_plane: ControlPlane, dev_run: StackRun) -> None:
    done = control_plane.run(step(dev_run, "calico"), FAIL_APPLIES="1", FAIL_WITH=SERVER_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "calico available: apiserver calico\n"
    assert SERVER_TIMEOUT in done.stderr and "sending it again in 5 s" in done.stderr
    crds, crds_again, operator, installation = control_plane.applies()
    assert crds == crds_again and "operator-crds.yaml" in crds and "--server-side" in crds
    assert "tigera-operator.yaml" in operator and installation.endswith("apply -f -")
    # Calico's released manifests go unvalidated (no OpenAPI download); the rendered Installation is validated.
    assert "--validate=false" in crds and "--validate=false" in operator and "--validate" not in installation
    # The API server's own 34 s for a write is too short for Calico's largest CRD on a slow control plane.
    assert "--request-timeout=60s" in crds and "--request-timeout=60s" in operator


# Seen in the lab (the calico step run again while the API server restarted): kubectl's client-side validation
# cannot fetch the schema, and says so as a validation error; and a connection cut mid-request.
RESTARTING = (
    'error: error validating "http://192.168.150.1:8080/calico/manifests/operator-crds.yaml": error validating data: '
    'failed to download openapi: Get "https://192.168.150.10:6443/openapi/v2?timeout=32s": dial tcp '
    "192.168.150.10:6443: connect: connection refused; if you choose to ignore these errors, turn validation off "
    "with --validate=false",
    "Unable to connect to the server: unexpected EOF",
    # Not down, but too slow for kubectl's 32 s openapi download (lab run 12: the Installation's apply, right after
    # Calico's CRDs became Established, under TCG).
    'error: error validating "STDIN": error validating data: failed to download openapi: Get '
    '"https://192.168.150.10:6443/openapi/v2?timeout=32s": net/http: request canceled (Client.Timeout exceeded while '
    "awaiting headers); if you choose to ignore these errors, turn validation off with --validate=false",
)


@pytest.mark.parametrize("error", RESTARTING)
def test_calico_sends_an_apply_again_while_the_api_server_restarts(control_plane: ControlPlane, dev_run: StackRun, error: str) -> None:
    done = control_plane.run(step(dev_run, "calico"), FAIL_APPLIES="2", FAIL_WITH=error)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "calico available: apiserver calico\n"
    assert done.stderr.count("the API server did not take the request yet") == 2


def test_the_installation_waits_for_its_kinds_to_be_served(control_plane: ControlPlane, dev_run: StackRun) -> None:
    not_served = 'error: resource mapping not found for name: "default": no matches for kind "Installation"; ensure CRDs are installed first'
    done = control_plane.run(step(dev_run, "calico"), FAIL_APPLIES="3", FAIL_WITH=not_served)
    assert done.returncode == 0, done.stderr
    assert len(control_plane.applies()) == 6  # each of the three manifests was sent twice


@pytest.mark.parametrize(("name", "first_apply"), [("calico", "operator-crds.yaml"), ("smoke-test", "namespace kubeadm-libvirt-smoke")])
def test_an_error_a_retry_cannot_cure_stops_the_step_at_once(control_plane: ControlPlane, dev_run: StackRun, name: str, first_apply: str) -> None:
    failed = control_plane.run(step(dev_run, name), FAIL_APPLIES="1", FAIL_WITH=NOT_VALID)
    assert failed.returncode == 1
    assert len(control_plane.applies()) == 1
    assert NOT_VALID in failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if " ERROR: " in line]
    assert first_apply in error and error.endswith("failed (kubectl exit 1, see above)")


def test_the_smoke_test_sends_its_objects_again_while_the_api_server_is_busy(control_plane: ControlPlane, dev_run: StackRun) -> None:
    done = control_plane.run(step(dev_run, "smoke-test"), FAIL_APPLIES="2", FAIL_WITH=SERVER_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "smoke test passed\n"
    assert len(control_plane.applies()) == 5  # the namespace three times, then the deployment and the service
    assert done.stderr.count("applying namespace kubeadm-libvirt-smoke: the API server did not take the request yet") == 2


@pytest.mark.parametrize(("scale_percent", "applied"), [("100", "operator-crds.yaml"), ("400", "operator-crds.json")])
def test_on_a_slow_host_calico_applies_its_crds_without_their_descriptions(
    control_plane: ControlPlane, dev_run: StackRun, scale_percent: str, applied: str
) -> None:
    """timeoutScale above 1 sends the CRDs through the stripper (tests/test_lab_calico.py reads what it makes of
    the real operator-crds.yaml); at 1 they go as downloaded."""
    done = control_plane.run(step(dev_run, "calico"), TIMEOUT_SCALE_PERCENT=scale_percent)
    assert done.returncode == 0, done.stderr
    crds = control_plane.applies()[0]
    assert crds.split(" -f ")[1].split()[0].endswith(f"/{applied}"), crds
    assert ("leaving the descriptions out" in done.stderr) == (scale_percent != "100")
