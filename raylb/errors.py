"""raylb's own errors, and the shape of a reported configuration problem.

Bad input from users never becomes a traceback: pure functions return `Problem`s that name
the resource, the field and the value, in words the operator can put into a status
condition and an event. Exceptions are for the code paths that cannot continue.

    RaylbError
    ├── ConfigError          a resource cannot be used as written (carries Problems)
    ├── AllocationError      no IP can be given to a service (carries a reason)
    ├── PermanentError       retrying will not help; report and wait for a change
    └── TemporaryError       retry after `delay_s`

Library errors are wrapped with `raise ... from` at the edge that catches them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one resource, ready for a status condition and an event."""

    kind: str  # e.g. "IPAddressPool"
    name: str  # metadata.name of the offending resource
    field: str  # JSON path inside the resource, e.g. "spec.addresses[2]"
    value: str  # the offending value as the user wrote it
    message: str  # what is wrong and what to change

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.field}={self.value!r}: {self.message}"


class RaylbError(Exception):
    """Root of raylb's exception tree."""


class ConfigError(RaylbError):
    """A resource cannot be used as written."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[object, ...]:  # errors cross process boundaries (Ray)
        return (type(self), (self.problems,))


class AllocationError(RaylbError):
    """No IP can be given to a service; `reason` is one short machine-readable word."""

    def __init__(self, service: str, reason: str, message: str) -> None:
        self.service = service
        self.reason = reason
        self.message = message
        super().__init__(f"{service}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.service, self.reason, self.message))


class PermanentError(RaylbError):
    """Retrying the same step will not help."""


class ForbiddenError(PermanentError):
    """The API refused the caller the verb on the resource (Kubernetes RBAC, HTTP 403). Here,
    not in the Kubernetes shell, so the pure operator can tell a denial from an outage."""


class TemporaryError(RaylbError):
    """Retrying later may help."""

    def __init__(self, message: str, *, delay_s: float = 1.0) -> None:
        self.delay_s = delay_s
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_temporary, (type(self), str(self), self.delay_s))


def _temporary(cls: type[TemporaryError], message: str, delay_s: float) -> TemporaryError:
    return cls(message, delay_s=delay_s)
