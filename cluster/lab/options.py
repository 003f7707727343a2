"""Command-line options the lab commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from raylb.cluster.lab.topology import check_lab_name


def _valid_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_lab_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def lab_name_option(default: str) -> Callable[[Any], Any]:
    """`--name`, checked before anything is provisioned or built."""
    return click.option(
        "--name", default=default, show_default=True, callback=_valid_name, help="lab name (namespaces rlb-NAME-*)"
    )
