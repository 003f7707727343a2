"""Where the operator gets the membership key from (raylb.keyring says what it is for).

With Kubernetes: the Secret `raylb-memberlist` (data key `secretkey`) in the operator
namespace, created with a random key when absent, as MetalLB's controller creates
`metallb-memberlist`. With the in-memory store: `$RAYLB_MEMBERLIST_KEY_FILE` or
`$RAYLB_MEMBERLIST_KEY` in the operator's environment (`raylb run` passes the file setting
on), else the same Secret kept in the store actor, so the key survives operator restarts as
it would in Kubernetes. The key is read again every `REFRESH_S`: editing the Secret (or the
file) rotates the key (raylb.keyring).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from raylb.keyring import SECRET_NAME, key_from_environment, key_from_secret, new_secret

log = logging.getLogger(__name__)

# How often the operator reads the key again: a rotation starts within this; one GET per
# 10 s costs the API server nothing.
REFRESH_S = 10.0


class SecretStore(Protocol):
    """The operator namespace's `raylb-memberlist` Secret in some store."""

    def get(self) -> Mapping[str, Any] | None: ...

    def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create it; if it was created meanwhile, return the one that exists."""
        ...


class KeySource(Protocol):
    def read(self) -> bytes: ...


class SecretKeySource:
    """The key in the Secret, the Secret created first when it is absent; with `environ`
    (the in-memory store only), $RAYLB_MEMBERLIST_KEY(_FILE) comes first."""

    def __init__(self, store: SecretStore, *, namespace: str, environ: Mapping[str, str] | None = None) -> None:
        self._store = store
        self._namespace = namespace
        self._environ = environ

    def read(self) -> bytes:
        if self._environ is not None:
            key = key_from_environment(self._environ, read_file=lambda p: Path(p).read_bytes())
            if key is not None:
                return key
        obj = self._store.get()
        if obj is None:
            log.info("creating Secret %s/%s with a new membership key", self._namespace, SECRET_NAME)
            obj = self._store.create(new_secret(self._namespace))
        return key_from_secret(obj, namespace=self._namespace)


def environment() -> Mapping[str, str]:
    """This process's environment, for SecretKeySource (a function so tests can pass their own)."""
    return dict(os.environ)
