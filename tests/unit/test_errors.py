"""raylb's errors keep their fields when they cross a process boundary (Ray pickles them)."""

from __future__ import annotations

import pickle

from raylb.errors import AllocationError, ConfigError, PermanentError, Problem, TemporaryError


def test_allocation_error_round_trips() -> None:
    error = pickle.loads(pickle.dumps(AllocationError("ns/a", "pool-exhausted", "no free IP in doc-example")))
    assert (error.service, error.reason, error.message) == ("ns/a", "pool-exhausted", "no free IP in doc-example")
    assert str(error) == "ns/a: no free IP in doc-example"


def test_config_error_round_trips_with_its_problems() -> None:
    problem = Problem("IPAddressPool", "doc-example", "spec.addresses[0]", "10.0.0.300", "invalid address")
    error = pickle.loads(pickle.dumps(ConfigError([problem])))
    assert error.problems == (problem,)
    assert "spec.addresses[0]" in str(error)


def test_temporary_error_keeps_its_delay() -> None:
    error = pickle.loads(pickle.dumps(TemporaryError("API server unreachable", delay_s=2.5)))
    assert (str(error), error.delay_s) == ("API server unreachable", 2.5)


def test_permanent_error_round_trips() -> None:
    assert str(pickle.loads(pickle.dumps(PermanentError("forbidden")))) == "forbidden"
