"""`raylb demo` allocates the seed's Services as the README describes."""

from __future__ import annotations

from click.testing import CliRunner

from raylb.cluster.demo import command


def test_the_demo_allocates_as_documented() -> None:
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("default/")}
    assert lines["default/web"][1:3] == ["198.18.0.128", "doc-example"]
    assert lines["default/billing"][1:3] == ["198.18.0.192", "doc-example-reserved"]
    assert lines["default/web6"][1:3] == ["2001:db8:18::1:0", "doc-example-ipv6"]
    assert lines["default/dns-tcp"][1] == lines["default/dns-udp"][1] == "198.18.0.140"
    assert lines["default/legacy"][1] == "<pending>" and "no-such-pool" in " ".join(lines["default/legacy"])
