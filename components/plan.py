"""Offline plan: the stack as a stable, diffable text, without a Pulumi CLI, a backend or a libvirt host.

    python -m components.plan --stack dev [--set kubernetesVersion=1.34.3 ...]

Runs the real program under mocks and prints the resource tree with every non-secret input, resource options that
change behaviour, and the rendered files (cloud-init, netplan, kubeadm config, node scripts) as readable text.
Secrets print as [secret]. tests/golden/plan-dev.txt keeps the dev stack's plan, so a pull request shows
Kubernetes-level intent (a new worker, a changed pod subnet, a script edit) as a plain diff.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from components import yaml_io
from components.config import ClusterConfig
from components.images import ImageList, cluster_images
from components.mockrun import Registration, StackRun, redact, run_program
from components.project_files import PROJECT_ROOT, declared_keys, merged_config, project_name
from components.stack_config import InvalidConfig
from components.validation import ConfigError, RawConfig, parse_cluster_config

# Long text inputs shown as blocks, and how to make them readable.
TEXT_INPUTS = ("userData", "metaData", "networkConfig", "create", "delete", "stdin")


def split_invocation(command: str) -> list[tuple[str, dict[str, str], str]]:
    """(step, env, script) for each `sudo env K=V ... bash -c SCRIPT step` joined by `&&`, as steps.invocation builds."""
    parts = []
    words = shlex.split(command)
    while words:
        if words[:1] != ["sudo"]:
            raise ValueError(f"not a step invocation: {command[:60]!r}")
        words = words[1:]
        env: dict[str, str] = {}
        if words and words[0] == "env":
            words = words[1:]
            while words and "=" in words[0]:
                key, value = words.pop(0).split("=", 1)
                env[key] = value
        if words[:2] != ["bash", "-c"] or len(words) < 4:
            raise ValueError(f"not a step invocation: {command[:60]!r}")
        parts.append((words[3], env, words[2]))
        words = words[4:]
        if words and words.pop(0) != "&&":
            raise ValueError(f"unexpected text after a step in {command[:60]!r}")
    return parts


def readable_command(command: str) -> str:
    """A step's command as its script name, the script's digest and its inputs, or the command itself.

    The scripts are files in components/scripts/ and a pull request shows their diff directly; here a changed
    digest marks exactly the steps that will run the changed text.
    """
    try:
        parts = split_invocation(command)
    except ValueError:
        return command.rstrip("\n") + "\n"
    sections = []
    for step, env, script in parts:
        digest = hashlib.sha256(script.encode()).hexdigest()[:16]
        lines = [f"# step {step}: components/scripts/{step}.sh after lib/common.sh, sha256 {digest}"]
        for key, value in env.items():
            if "\n" in value.rstrip("\n"):  # rendered documents (kubeadm config, Calico) read best as blocks
                lines.append(f"#   {key}: |")
                lines += [f"#     {line}" for line in value.rstrip("\n").splitlines()]
            else:
                lines.append(f"#   {key}={json.dumps(value)}")
        sections.append("\n".join(lines) + "\n")
    return "".join(sections)


def redact_cloud_config(user_data: str) -> str:
    """user-data with only its private host keys hidden: the rest of a node's seed is for reviewers to read."""
    document = yaml_io.load(user_data)
    for key in list(document.get("ssh_keys", {})):
        if key.endswith("_private"):
            document["ssh_keys"][key] = "[secret]"
    return "#cloud-config\n" + yaml_io.dump(document)


def _options(registration: Registration, names: dict[str, str]) -> list[str]:
    options = []
    if registration.protect:
        options.append("protect")
    if registration.delete_before_replace:
        options.append("deleteBeforeReplace")
    replace_on = [p for p in registration.replace_on_changes if p != "triggers[*]"]
    if replace_on:
        options.append(f"replaceOnChanges={','.join(replace_on)}")
    if registration.additional_secret_outputs:
        options.append(f"secretOutputs={','.join(registration.additional_secret_outputs)}")
    if registration.deleted_with:
        options.append(f"deletedWith={names.get(registration.deleted_with, registration.deleted_with)}")
    if registration.custom_timeouts:
        options.append("timeouts=" + ",".join(f"{k}:{v}" for k, v in sorted(registration.custom_timeouts.items())))
    waits_for = sorted(names[urn] for urn in registration.all_dependencies if urn in names)
    if waits_for:
        options.append(f"after={','.join(waits_for)}")
    return options


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


def render_plan(run: StackRun, stack: str, images: ImageList | None = None) -> str:
    names = {r.urn: r.name for r in run.registrations}
    children: dict[str, list[Registration]] = defaultdict(list)
    for registration in run.registrations:
        children[registration.parent].append(registration)
    lines = [f"# Offline plan of stack {stack} (python -m components.plan --stack {stack})", "", "outputs:"]
    for name, output in sorted(run.outputs.items()):
        value = "[secret]" if output.secret else json.dumps(output.value, sort_keys=True)
        lines.append(f"  {name}: {value}")
    lines += ["", "resources:"]

    def emit(registration: Registration, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}- {registration.name} ({registration.type})")
        options = _options(registration, names)
        if options:
            lines.append(f"{pad}    options: {' '.join(options)}")
        inputs = redact(registration.inputs)
        if registration.type == "libvirt:index/cloudInitDisk:CloudInitDisk" and registration.is_secret("userData"):
            inputs["userData"] = redact_cloud_config(registration.input("userData"))
        for key in sorted(inputs):
            value = inputs[key]
            if key in TEXT_INPUTS and isinstance(value, str) and value != "[secret]":
                block = readable_command(value) if key in ("create", "delete") else value
                lines.append(f"{pad}    {key}: |")
                lines.append(_indent(block.rstrip("\n"), pad + "      "))
            else:
                lines.append(f"{pad}    {key}: {json.dumps(value, sort_keys=True)}")
        for child in sorted(children.get(registration.urn, []), key=lambda r: r.name):
            emit(child, depth + 1)

    roots = [r for r in run.registrations if r.parent not in names]
    for registration in sorted(roots, key=lambda r: r.name):
        emit(registration, 1)
    if images is not None:
        lines += ["", f"images (python -m components.images --stack {stack}):"]
        lines += [f"  {image}" for image in images.images]
        lines += [f"  # not named: {problem}" for problem in images.unknown]
    return "\n".join(lines) + "\n"


class UsageError(Exception):
    """A command-line mistake: printed alone (no traceback), exit status 2."""


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs; VALUE is YAML when it starts with [ or { (lists and mappings), else a string."""
    known = declared_keys()
    project = project_name()
    overrides = {}
    for setting in settings:
        key, equals, raw = setting.partition("=")
        short_key = key.removeprefix(f"{project}:")
        if not equals or not key:
            raise UsageError(f"--set {setting!r}: expected KEY=VALUE, e.g. --set kubernetesVersion=1.34.3")
        if ":" not in short_key and short_key not in known:
            # The program ignores keys it does not declare, so a typo would silently plan the unchanged stack.
            raise UsageError(f"--set {key}: not a config key of this project; known keys: {', '.join(sorted(known))}")
        try:
            overrides[key] = yaml_io.load(raw) if raw[:1] in "[{" else raw
        except yaml_io.YAMLError as error:
            raise UsageError(f"--set {key}: the value is not valid YAML ({error.__class__.__name__}: {error})") from None
    return overrides


def load_config(stack: str, overrides: dict[str, Any]) -> ClusterConfig:
    """The stack's validated ClusterConfig, from the same merge of Pulumi.yaml and the stack file the plan runs."""
    prefix = f"{project_name()}:"
    merged = merged_config(stack, overrides)
    values = {key.removeprefix(prefix): value for key, value in merged.items() if key.startswith(prefix)}
    try:
        return parse_cluster_config(RawConfig(values))
    except ConfigError as error:
        raise InvalidConfig(str(error)) from None


def run_cli(argv: list[str] | None, description: str, render: Callable[[str, dict[str, Any]], str]) -> int:
    """`--stack S [--set K=V ...]`, then print render(stack, overrides); exit 2 with the problem alone (no traceback)
    on bad arguments, an invalid configuration or an unreadable stack file. Shared by the plan and the image list."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stack", default="dev", help="the Pulumi.<stack>.yaml to merge with Pulumi.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on unknown options
    try:
        if not (PROJECT_ROOT / f"Pulumi.{args.stack}.yaml").is_file():
            raise UsageError(f"--stack {args.stack}: there is no Pulumi.{args.stack}.yaml in {PROJECT_ROOT}")
        text = render(args.stack, parse_settings(args.set))
    except (UsageError, InvalidConfig) as error:
        print(error, file=sys.stderr)
        return 2
    except ValueError as error:  # project_files: an encrypted value in the stack file, which only the CLI can read
        print(f"cannot read the stack config: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the plan, the images every node will pull at its end."""

    def render(stack: str, overrides: dict[str, Any]) -> str:
        run = run_program(stack, overrides=overrides)  # validates first: an invalid config stops here
        return render_plan(run, stack, cluster_images(load_config(stack, overrides)))

    return run_cli(argv, __doc__.splitlines()[0], render)


if __name__ == "__main__":
    raise SystemExit(main())
