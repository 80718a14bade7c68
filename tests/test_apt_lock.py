"""apt's lock race on first boot: every apt command the node scripts run survives a dpkg/apt lock taken by
apt-daily or unattended-upgrades at any moment, for at most APT_LOCK_TIMEOUT_SECONDS.

The library functions run for real in bash, against a fake apt-get/apt-mark on PATH that fails with apt's own lock
messages a given number of times: nothing on this machine is installed or locked.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.node_sandbox import install_fakes

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "components" / "scripts"
LIBRARY = SCRIPTS_DIR / "lib" / "common.sh"

# What apt 1.6 (bionic) prints when unattended-upgrades holds the dpkg lock; apt 2.x names the holder instead.
BIONIC_LOCK_ERROR = (
    "E: Could not get lock /var/lib/dpkg/lock-frontend - open (11: Resource temporarily unavailable)\n"
    "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?"
)
LISTS_LOCK_ERROR = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 812 (apt-get)"
DPKG_LOCK_ERROR = (
    "dpkg: error: dpkg frontend lock was locked by another process with pid 1234\n"
    "E: Executing dpkg failed. Are you root?"
)

# One fake for apt-get and apt-mark: `--version` reports $FAKE_APT_VERSION; every other call is recorded and
# fails with $LOCK_ERROR (exit 100) while $SANDBOX/locked-runs is above zero, or with $OTHER_ERROR if set.
FAKE_APT = """#!/bin/bash
if [ "$1" = --version ]; then echo "apt $FAKE_APT_VERSION (amd64)"; exit 0; fi
echo "$(basename "$0") $*" >>"$SANDBOX/calls"
if [ "$1 $2" = "showhold " ] || [ "$1" = showhold ]; then exit 0; fi
if [ -n "${OTHER_ERROR:-}" ]; then echo "$OTHER_ERROR" >&2; exit 100; fi
left=$(cat "$SANDBOX/locked-runs")
if [ "$left" -gt 0 ]; then
  echo $((left - 1)) >"$SANDBOX/locked-runs"
  echo "$LOCK_ERROR" >&2
  exit 100
fi
if [ -n "${WARNING:-}" ]; then echo "$WARNING" >&2; fi
echo "fake $(basename "$0"): done"
"""


def run_library(tmp_path: Path, snippet: str, *, locked_runs: int, apt_version: str = "1.6.17",
                lock_error: str = BIONIC_LOCK_ERROR, **env: str) -> tuple[subprocess.CompletedProcess[str], float, list[str]]:
    """Run `snippet` after lib/common.sh with the fake apt on PATH; (result, seconds taken, recorded calls)."""
    bin_dir = tmp_path / "bin"
    install_fakes(bin_dir, dict.fromkeys(("apt-get", "apt-mark"), FAKE_APT))
    (tmp_path / "locked-runs").write_text(str(locked_runs))
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", LIBRARY.read_text() + "\n" + snippet, "apt-test"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SANDBOX": str(tmp_path), "FAKE_APT_VERSION": apt_version,
             "LOCK_ERROR": lock_error, **env},
    )  # fmt: skip
    calls_file = tmp_path / "calls"
    calls = calls_file.read_text().splitlines() if calls_file.exists() else []
    return result, time.monotonic() - started, calls


def test_bionic_apt_retries_a_taken_lock_until_it_is_free(tmp_path: Path) -> None:
    result, _, calls = run_library(tmp_path, "apt_install socat", locked_runs=2, APT_LOCK_TIMEOUT_SECONDS="30")
    assert result.returncode == 0, result.stderr
    # update hit the lock twice, then ran; install ran at once. apt 1.6 gets no lock-timeout option it would refuse.
    assert calls[:3] == ["apt-get -qq update"] * 3
    assert len(calls) == 4 and calls[3].startswith("apt-get install -y") and calls[3].endswith(" socat")
    assert not any("Lock::Timeout" in call for call in calls)
    assert result.stderr.count("apt-get update: a dpkg/apt lock is taken") == 2
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in result.stderr


def test_newer_apt_also_waits_by_itself_within_the_same_bound(tmp_path: Path) -> None:
    result, _, calls = run_library(
        tmp_path, "apt_get_locked apt-get -qq update", locked_runs=1, apt_version="2.6.1",
        lock_error=LISTS_LOCK_ERROR, APT_LOCK_TIMEOUT_SECONDS="30",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(calls) == 2
    # apt >= 1.9.11: DPkg::Lock::Timeout is what is left of the bound, never more; the lists lock, which apt does
    # not wait for, is retried like on bionic.
    timeouts = [int(re.search(r"-o DPkg::Lock::Timeout=(\d+) ", call).group(1)) for call in calls]
    assert 30 >= timeouts[0] >= timeouts[1] >= 25


def test_the_wait_is_bounded_and_says_what_holds_the_lock(tmp_path: Path) -> None:
    result, seconds, calls = run_library(tmp_path, "apt_install socat", locked_runs=1000, APT_LOCK_TIMEOUT_SECONDS="3")
    assert result.returncode == 1
    assert 2 <= seconds < 10, seconds  # bash's SECONDS counts whole seconds: the bound holds to within one
    assert 2 <= len(calls) <= 4 and set(calls) == {"apt-get -qq update"}  # install never ran
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("[apt-test] ERROR: apt-get update could not get the dpkg/apt lock within 3s (APT_LOCK_TIMEOUT_SECONDS")
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in message and "lock files were left untouched" in message


def test_a_zero_bound_tries_once(tmp_path: Path) -> None:
    result, _, calls = run_library(tmp_path, "apt_get_locked apt-get -qq update", locked_runs=1, APT_LOCK_TIMEOUT_SECONDS="0")
    assert result.returncode == 1 and len(calls) == 1
    assert "within 0s (APT_LOCK_TIMEOUT_SECONDS" in result.stderr


def test_other_apt_failures_are_not_retried(tmp_path: Path) -> None:
    result, seconds, calls = run_library(
        tmp_path, "apt_get_locked apt-get install -y nosuchpackage", locked_runs=0,
        OTHER_ERROR="E: Unable to locate package nosuchpackage", APT_LOCK_TIMEOUT_SECONDS="30",
    )  # fmt: skip
    assert result.returncode == 100 and len(calls) == 1 and seconds < 5
    assert "E: Unable to locate package nosuchpackage" in result.stderr and "retrying" not in result.stderr


def test_what_apt_printed_on_stderr_is_left_for_the_caller(tmp_path: Path) -> None:
    """os-apt-sources.sh reads apt-get update's warnings (W: Failed to fetch ...), which it treats as failures."""
    warning = "W: Failed to fetch http://mirror.invalid/dists/bookworm/InRelease  Could not resolve 'mirror.invalid'"
    result, _, _ = run_library(
        tmp_path, 'apt_get_locked apt-get -qq update; printf "<%s>" "$APT_STDERR"', locked_runs=1,
        WARNING=warning, APT_LOCK_TIMEOUT_SECONDS="30",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"<{warning}>"  # the last attempt's, not the lock error of the first
    assert warning in result.stderr and "fake apt-get: done" in result.stderr  # and shown in the step's log


def test_apt_mark_hold_survives_the_dpkg_lock(tmp_path: Path) -> None:
    result, _, calls = run_library(
        tmp_path, "ensure_held kubelet", locked_runs=1, lock_error=DPKG_LOCK_ERROR, APT_LOCK_TIMEOUT_SECONDS="30"
    )
    assert result.returncode == 0, result.stderr
    assert calls == ["apt-mark showhold", "apt-mark hold kubelet", "apt-mark hold kubelet"]
    assert "apt-mark hold: a dpkg/apt lock is taken ('dpkg: error: dpkg frontend lock" in result.stderr


def test_a_bad_bound_is_refused_before_apt_runs(tmp_path: Path) -> None:
    result, _, calls = run_library(tmp_path, "apt_get_locked apt-get -qq update", locked_runs=0, APT_LOCK_TIMEOUT_SECONDS="soon")
    assert result.returncode == 2 and calls == []
    assert "APT_LOCK_TIMEOUT_SECONDS='soon': expected a whole number of seconds" in result.stderr


# Commands that take the dpkg/apt locks; `apt-get --version`, `apt-mark showhold` and apt-cache only read.
LOCKING_APT_CALL = re.compile(r"(?<![\w-])(apt-get|apt-mark|apt)\s+(?!--version\b|showhold\b)")


@pytest.mark.parametrize("path", [LIBRARY, *sorted(SCRIPTS_DIR.glob("*.sh"))], ids=lambda p: p.name)
def test_every_apt_call_goes_through_the_lock_wrapper(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0]
        code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", code)  # messages and log lines name apt-get too
        for match in LOCKING_APT_CALL.finditer(code):
            assert code[: match.start()].rstrip().endswith("apt_get_locked"), f"line {number}: {line.strip()}"
