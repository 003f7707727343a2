"""The `raylb` command line: the composition root.

Subcommands are registered here by dotted path and imported only when run, so `raylb --help`
stays fast and the pure core never imports the Ray or Kubernetes shells at import time.
Each area of the code owns its commands in its own module.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "bench": "raylb.bench:group",
    "lab": "raylb.cluster.lab.cli:group",
    "crds": "raylb.crds:command",
    "demo": "raylb.cluster.demo:command",
    "run": "raylb.cluster.control:run_command",
    "apply": "raylb.cluster.control:apply_command",
    "delete": "raylb.cluster.control:delete_command",
    "status": "raylb.cluster.control:status_command",
    "uninstall": "raylb.cluster.control:uninstall_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, _, attribute = self._lazy[cmd_name].partition(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="raylb")
def main() -> None:
    """raylb: bare-metal LoadBalancer IPs for Kubernetes, run as Ray actors."""
