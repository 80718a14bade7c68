"""lab.engine.deadline against a real process tree: a stand-in `pulumi` CLI whose Go plugin hangs.

The plugin is a real Go binary, built here, whose one goroutine blocks as go-libvirt's reader does in the libvirt
plugin's known hang (lab/engine.py, REFRESH_EXCLUDES): in `(*Libvirt).callback`, sending on a channel nobody reads.
The CLI is a bash script named `pulumi` (what the deadline looks for among this process's children) that starts the
plugin with its stderr in a file, as the engine keeps a plugin's stderr, and a Python process standing in for the
lab's Python plugins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lab import engine
from lab.engine import deadline

# A package at go-libvirt's import path, so that the runtime names the function in its dump as in the plugin.
STAND_IN_LIBRARY = """\
package libvirt

import "sync"

type Libvirt struct{ cmux sync.Mutex }

// Callback holds the lock while sending to a caller that has gone, as go-libvirt's callback does.
func (l *Libvirt) Callback(c chan int) { l.callback(c) }

func (l *Libvirt) callback(c chan int) {
	l.cmux.Lock()
	defer l.cmux.Unlock()
	c <- 1
}
"""

HANGING_PLUGIN = """\
package main

import (
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

func main() {
	go (&libvirt.Libvirt{}).Callback(make(chan int))
	time.Sleep(time.Hour)
}
"""

FAKE_CLI = """\
#!/bin/bash
# A Python process standing in for the lab's Python plugins, then the Go plugin; ends when the plugin does.
python3 -c 'import time; time.sleep(600)' &
echo $! > "$STAND_IN_PID"
"$PLUGIN" 2> "$PLUGIN_STDERR"
echo "plugin exited with $?"
kill "$(cat "$STAND_IN_PID")" && echo "stand-in was still running"
exit 1
"""


@pytest.fixture(scope="module")
def hanging_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        pytest.fail("go is not installed (.ci/run installs it; the lab's toolchain needs it)")
    source = tmp_path_factory.mktemp("plugin")
    (source / "go.mod").write_text("module github.com/digitalocean/go-libvirt\n\ngo 1.22\n")
    (source / "libvirt.go").write_text(STAND_IN_LIBRARY)
    (source / "plugin").mkdir()
    (source / "plugin" / "main.go").write_text(HANGING_PLUGIN)
    binary = source / "pulumi-resource-libvirt"
    subprocess.run(["go", "build", "-o", str(binary), "./plugin"], cwd=source, check=True, timeout=300,
                   env={**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"})  # fmt: skip
    return binary


def test_a_hung_go_plugin_is_dumped_and_the_cli_ends_by_itself(hanging_plugin: Path, tmp_path: Path) -> None:
    cli = tmp_path / "pulumi"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    stderr, stand_in = tmp_path / "plugin.stderr", tmp_path / "stand-in.pid"
    env = {**os.environ, "PLUGIN": str(hanging_plugin), "PLUGIN_STDERR": str(stderr), "STAND_IN_PID": str(stand_in)}
    started = time.monotonic()
    with deadline(2, "a hanging operation"):
        done = subprocess.run([str(cli)], env=env, capture_output=True, text=True, timeout=engine.DUMP_SECONDS + 60)
    took = time.monotonic() - started

    dump = stderr.read_text()
    # Where the plugin hung, named as in the libvirt plugin's own dump.
    assert "SIGQUIT" in dump and "github.com/digitalocean/go-libvirt.(*Libvirt).callback(" in dump, dump
    # The plugin ended on the dump (a Go runtime exits 2 after it), and the CLI then ended by itself: no SIGINT.
    # The Python stand-in got no SIGQUIT (it would have died without a word): the CLI ended it itself.
    assert done.stdout.splitlines() == ["plugin exited with 2", "stand-in was still running"], done
    assert took < engine.DUMP_SECONDS, f"{took:.0f} s: the CLI was interrupted instead of ending by itself"


def test_nothing_happens_to_an_operation_within_its_bound(tmp_path: Path) -> None:
    cli = tmp_path / "pulumi"
    cli.write_text("#!/bin/bash\nsleep 1\necho done\n")
    cli.chmod(0o755)
    with deadline(30, "a quick operation"):
        done = subprocess.run([str(cli)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "done\n")
