"""`raylb demo --local` allocates the seed's Services as the README describes; `raylb demo`
explains a failure and refuses what it cannot do (the full run is tests/lab/test_demo.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from raylb.cluster import demo
from raylb.cluster.demo import command


def test_the_demo_allocates_as_documented() -> None:
    result = CliRunner().invoke(command, ["--local"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("default/")}
    assert lines["default/web"][1:3] == ["198.18.0.128", "doc-example"]
    assert lines["default/billing"][1:3] == ["198.18.0.192", "doc-example-reserved"]
    assert lines["default/web6"][1:3] == ["2001:db8:18::1:0", "doc-example-ipv6"]
    assert lines["default/dns-tcp"][1] == lines["default/dns-udp"][1] == "198.18.0.140"
    assert lines["default/legacy"][1] == "<pending>" and "no-such-pool" in " ".join(lines["default/legacy"])


def test_a_failed_step_is_named_with_its_logs_and_the_lab_is_left_for_a_look(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*, name: str, fresh: bool) -> None:
        raise demo.DemoError("starting raylb as a Ray job", RuntimeError("job raylb-1 FAILED"), logs=demo._log_places(name))

    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    monkeypatch.setattr(demo, "run_demo", fail)
    monkeypatch.setattr(demo, "lab_namespaces", lambda name: [f"rlb-{name}-control"])
    result = CliRunner().invoke(command, ["--name", "x1"])
    assert result.exit_code == 1
    assert "FAILED while starting raylb as a Ray job:\n  job raylb-1 FAILED" in result.output
    assert "/tmp/rlb-x1/kube/kube-apiserver.log" in result.output
    assert "raylb lab down --name x1" in result.output


def test_a_failed_build_says_the_half_built_lab_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*, name: str, fresh: bool) -> None:
        raise demo.DemoError("building lab 'x1'", KeyboardInterrupt())

    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    monkeypatch.setattr(demo, "run_demo", fail)
    monkeypatch.setattr(demo, "lab_namespaces", lambda name: [])
    result = CliRunner().invoke(command, ["--name", "x1"])
    assert result.exit_code == 1
    assert "KeyboardInterrupt" in result.output and "removed again" in result.output


@pytest.mark.parametrize(
    ("args", "euid", "code", "says"),
    [
        (["--name", "Bad-Name"], 0, 2, "lab name 'Bad-Name' is invalid"),
        ([], 1000, 1, "raylb demo --local"),
    ],
)
def test_the_demo_refuses_what_it_cannot_do(
    monkeypatch: pytest.MonkeyPatch, args: list[str], euid: int, code: int, says: str
) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: euid)
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: pytest.fail("must not start"))
    result = CliRunner().invoke(command, args)
    assert result.exit_code == code and says in result.output
