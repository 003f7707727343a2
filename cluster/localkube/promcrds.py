"""The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor), fetched for the tests, never
kept in the repository.

deploy/monitoring/ is what a Prometheus Operator user applies; the test API server must judge
it against that operator's own CRDs. They come from the Go module proxy, like every other
binary and schema the tests use (see provision.py): the prometheus-operator module at
`VERSION` ships them in example/prometheus-operator-crd/. They are copied once into the
control-plane cache; later runs read the copy.

    python -m raylb.cluster.localkube.promcrds     # fetch (or find) them; prints where
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from raylb.cluster.localkube.provision import Progress, _go_env, cache_root, find_go
from raylb.errors import PermanentError

MODULE = "github.com/prometheus-operator/prometheus-operator"
VERSION = "v0.85.0"
CRD_DIR = "example/prometheus-operator-crd"
#: The kinds deploy/monitoring uses.
FILES = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml")


def cache_dir() -> Path:
    return cache_root() / f"prometheus-operator-{VERSION}-crds"


def ensure_crds(progress: Progress = print) -> list[Path]:
    """The CRD files, from the cache or fetched through the module proxy into it."""
    target = cache_dir()
    if all((target / name).is_file() for name in FILES):
        return [target / name for name in FILES]
    go = find_go(progress)
    progress(f"fetching {MODULE}@{VERSION} from the Go module proxy for its CRDs")
    with tempfile.TemporaryDirectory(prefix="raylb-promcrds-") as cwd:
        out = subprocess.run(
            [go, "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
    if out.returncode != 0:
        raise PermanentError(f"cannot download {MODULE}@{VERSION}: {out.stderr.strip() or out.stdout.strip()}")
    source = Path(json.loads(out.stdout)["Dir"]) / CRD_DIR
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in FILES:
        if not (source / name).is_file():
            raise PermanentError(f"{MODULE}@{VERSION} has no {CRD_DIR}/{name}")
        shutil.copyfile(source / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return [target / name for name in FILES]


def main() -> int:
    for path in ensure_crds(lambda line: print(f"[promcrds] {line}", flush=True)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
