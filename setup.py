"""Package discovery only; all metadata lives in pyproject.toml.

The folders actors/ and cluster/ sit at the top level of the repository but are
the subpackages raylb.actors and raylb.cluster; setuptools cannot express that
mapping together with automatic discovery in pyproject.toml alone.
"""

from setuptools import find_packages, setup

ROOTS = {"raylb": "raylb", "raylb.actors": "actors", "raylb.cluster": "cluster"}


def _packages() -> list[str]:
    found = []
    for package, folder in ROOTS.items():
        found.append(package)
        found.extend(f"{package}.{sub}" for sub in find_packages(folder))
    return sorted(set(found))


setup(packages=_packages(), package_dir=ROOTS)
