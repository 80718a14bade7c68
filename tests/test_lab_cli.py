"""`python3 -m lab` refuses bad input and missing prerequisites with the problem alone, exit status 2, and leaves
nothing behind (no namespace, no daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from components.project_files import PROJECT_ROOT


def lab(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "lab", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def namespaces() -> str:
    if shutil.which("ip") is None:
        return ""
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def assert_refused(done: subprocess.CompletedProcess[str], *named: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.startswith("lab: ")
    for text in named:
        assert text in done.stderr, done.stderr


def test_bad_configuration_is_refused_before_anything_starts() -> None:
    before = namespaces()
    done = lab("preview", "--name", f"cli-{os.getpid()}", "--set", "vcpus=1", "--set", "kubeProxyMode=nft")
    assert_refused(done, "vcpus: 1", "kubeProxyMode: 'nft'", "2 problems")
    assert namespaces() == before


def test_an_unknown_key_is_refused() -> None:
    assert_refused(lab("up", "--set", "nosuch=1"), "--set nosuch", "known keys")


def test_missing_go_is_named_in_one_line() -> None:
    python_only = os.pathsep.join(p for p in ("/usr/sbin", "/usr/bin", "/bin") if not os.path.exists(f"{p}/go"))
    done = lab("toolchain", "check", env={**os.environ, "PATH": python_only})
    assert_refused(done, "go is missing")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody")
def test_a_host_start_without_root_is_refused_and_creates_nothing() -> None:
    before = namespaces()
    done = lab("host", "start", "--name", f"cli-{os.getpid()}", prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert_refused(done, "root")
    assert len(done.stderr.strip().splitlines()) == 1
    assert namespaces() == before
