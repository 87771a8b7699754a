"""What pyproject.toml declares: a licence that ships, floors CI tests, no unused dependency.

The wheel itself (``License-Expression: MIT``, the LICENSE file inside) and the fast tests at
the lowest declared versions are checked by ``.ci/run``, which may reach the package registry.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPOSITORY = Path(__file__).resolve().parents[1]
# Distribution names whose import name differs.
IMPORT_NAMES = {"scikit-learn": "sklearn", "huggingface-hub": "huggingface_hub", "pillow": "PIL"}


def _pyproject() -> dict:
    with (REPOSITORY / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _distribution(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()


def _imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (REPOSITORY / "sparsam").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_declared_dependency_is_imported_by_sparsam():
    imported = _imported_top_level_modules()
    declared = [_distribution(r) for r in _pyproject()["project"]["dependencies"]]
    unused = [name for name in declared if IMPORT_NAMES.get(name, name) not in imported]
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"


def test_the_mit_licence_is_declared_and_shipped():
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (REPOSITORY / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "the sparsam authors" in text


def test_the_build_backend_can_write_a_licence_expression():
    # setuptools < 77 rejects `license = "MIT"` (a PEP 639 expression) and license-files.
    (requirement,) = _pyproject()["build-system"]["requires"]
    floor = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement)
    assert floor and int(floor.group(1)) >= 77, requirement


def test_lowest_requirements_pin_each_floor_and_the_local_torch():
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / ".ci" / "lowest_requirements.py"), "plot", "dicom"],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = dict(line.split("==", 1) for line in result.stdout.split())
    project = _pyproject()["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["plot"]
    for requirement in requirements + project["optional-dependencies"]["dicom"]:
        name = _distribution(requirement)
        if name not in ("torch", "torchvision"):
            assert pins[name] == requirement.split(">=")[1], requirement
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
