"""Print the lowest versions that pyproject.toml declares, as ``name==version`` lines.

CI installs these into a second virtual environment and runs the fast tests there, so that a
floor such as ``scikit-learn>=1.6`` is a version sparsam really works with, not a guess.

    python .ci/lowest_requirements.py [EXTRA ...] > lowest.txt

prints one pin per dependency of ``[project.dependencies]`` and of the named optional extras
(e.g. ``plot dicom``), each at its ``>=`` floor. torch and torchvision are the exception: they
are pinned to the builds this machine serves from its local disk (`LOCAL_TORCH`), whatever
the floor, since no other torch build can be installed here. A dependency without a ``>=``
floor is an error: "lowest" would mean nothing.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The only torch builds served here (from local disk); torchvision comes in through timm.
LOCAL_TORCH = {"torch": "2.14.1", "torchvision": "0.29.1"}
# name[extras] >= version, optionally followed by an environment marker.
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*"
    r">=\s*(?P<version>[^,;\s]+)\s*(?P<marker>;.*)?$"
)


def lowest_pins(pyproject: dict, extras: list[str]) -> list[str]:
    """``name==floor`` for the project's dependencies and the dependencies of ``extras``."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"{PYPROJECT}: no optional dependencies named {unknown}")
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += optional[extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{PYPROJECT}: {requirement!r} has no '>=' floor to pin")
        name = match["name"].lower().replace("_", "-")
        version = LOCAL_TORCH.get(name, match["version"])
        pins[name] = f"{name}{match['extras'] or ''}=={version}{match['marker'] or ''}"
    for name, version in LOCAL_TORCH.items():
        pins.setdefault(name, f"{name}=={version}")
    return list(pins.values())


def main(extras: list[str]) -> None:
    """Print the pins of ``pyproject.toml`` for the optional ``extras``."""
    with PYPROJECT.open("rb") as file:
        pyproject = tomllib.load(file)
    print("\n".join(lowest_pins(pyproject, extras)))


if __name__ == "__main__":
    main(sys.argv[1:])
