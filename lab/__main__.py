"""python3 -m lab: build the lab's toolchain and guest image, start and stop a lab host, run the stack on it.

    python3 -m lab toolchain build|check     the Pulumi CLI and plugins, built from Go modules and cached
    python3 -m lab image build               the Debian 12 guest image (a bootable qcow2), cached by content
    python3 -m lab mirror build|check        Kubernetes, its packages and images, and Calico's images and manifests
                                             for an air-gapped cluster, cached
    python3 -m lab host start|stop|status    libvirtd in a network namespace of its own, with a `default` pool
    python3 -m lab env                       `export` lines for a shell that drives the lab by hand
    python3 -m lab preview|up|refresh|destroy [--stack lab] [--set KEY=VALUE] [--mirror]   the real engine on the
                                             lab host; --mirror installs Kubernetes from the lab mirror

A missing prerequisite or a bad configuration ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from lab.errors import LabError

DEFAULT_HOST = "lab"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    toolchain = commands.add_parser("toolchain", help="build or check the Pulumi toolchain")
    toolchain.add_argument("action", choices=("build", "check"))
    toolchain.add_argument("--force", action="store_true", help="rebuild even when the cache has this key")
    toolchain.set_defaults(handler=_toolchain)

    image = commands.add_parser("image", help="build the guest image")
    image.add_argument("action", choices=("build",))
    image.add_argument("--force", action="store_true")
    image.set_defaults(handler=_image)

    mirror = commands.add_parser("mirror", help="build or check the lab mirror (Kubernetes packages and images, Calico)")
    mirror.add_argument("action", choices=("build", "check"))
    mirror.add_argument("--force", action="store_true", help="rebuild even when the cache has this key")
    mirror.set_defaults(handler=_mirror)

    host = commands.add_parser("host", help="start, stop or show a lab host")
    host.add_argument("action", choices=("start", "stop", "status"))
    host.add_argument("--name", default=DEFAULT_HOST)
    host.set_defaults(handler=_host)

    env = commands.add_parser("env", help="print the environment a shell needs to use the lab")
    env.add_argument("--name", default=DEFAULT_HOST)
    env.set_defaults(handler=_env)

    for operation in ("preview", "up", "refresh", "destroy"):
        run = commands.add_parser(operation, help=f"pulumi {operation} of a stack on the lab host")
        run.add_argument("--stack", default="lab", help="stack name (its Pulumi.<stack>.yaml, if any, applies)")
        run.add_argument("--name", default=DEFAULT_HOST, help="the lab host")
        run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a config key (JSON for structured values)")
        run.add_argument("--mirror", action="store_true", help="install Kubernetes from the lab mirror (built if missing, served in the lab namespace)")
        run.set_defaults(handler=_stack_operation, operation=operation)
    return parser


def _toolchain(args: argparse.Namespace) -> int:
    from lab import toolchain

    if args.action == "build":
        built = toolchain.ensure_toolchain(force=args.force)
    else:
        built = toolchain.require_toolchain()
    manifest = built.manifest
    print(f"toolchain {built.root}")
    for name, version in manifest["versions"].items():
        print(f"  {name:8} {version}")
    seconds = ", ".join(f"{name} {value:.0f} s" for name, value in manifest["seconds"].items())
    print(f"  built in {seconds}; {manifest['bytes'] / 2**20:.0f} MiB")
    return 0


def _mirror(args: argparse.Namespace) -> int:
    from lab import calico, mirror

    if args.action == "build":
        built = mirror.ensure_mirror(force=args.force)
        calico_built = calico.ensure_calico(force=args.force)
    else:
        built, calico_built = mirror.require_mirror(), calico.require_calico()
    _print_build("mirror", built.root, built.manifest, built.manifest["images"])
    _print_build("calico", calico_built.root, calico_built.manifest, list(calico_built.image_refs().values()))
    return 0


def _print_build(part: str, root: Path, manifest: dict, images: list[str]) -> None:
    print(f"{part} {root}")
    for name, version in manifest["versions"].items():
        print(f"  {name:16} {version}")
    print(f"  images: {' '.join(images)}")
    seconds = ", ".join(f"{name} {value:.0f} s" for name, value in manifest["seconds"].items())
    print(f"  built in {seconds}; {manifest['bytes'] / 2**20:.0f} MiB")


def _image(args: argparse.Namespace) -> int:
    from lab.image import build_guest_image

    print(build_guest_image(force=args.force))
    return 0


def _host(args: argparse.Namespace) -> int:
    from lab import host

    if args.action == "start":
        print(host.start(args.name))
    elif args.action == "stop":
        host.stop(args.name)
        print(f"lab host {args.name} stopped")
    else:
        print(host.status(args.name))
    return 0


def _env(args: argparse.Namespace) -> int:
    from lab import host
    from lab.toolchain import require_toolchain

    variables = {**require_toolchain().env(), **host.env(args.name)}
    for key, value in variables.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _stack_operation(args: argparse.Namespace) -> int:
    from components.plan import UsageError, parse_settings
    from lab.run import run_operation

    try:
        overrides = parse_settings(args.set)
    except UsageError as error:
        raise LabError(str(error)) from None
    return run_operation(args.operation, stack=args.stack, host_name=args.name, overrides=overrides, mirrored=args.mirror)


if __name__ == "__main__":
    raise SystemExit(main())
