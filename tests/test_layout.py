"""The house rules of the code's layout (STYLE.md, issue 21), checked on every module.

A module fits in one sitting (at most 600 lines), a function on one screen (at most 80
lines), docstrings aside; private names stay in their module; nothing outside the command line
imports from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparsam"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _module_id(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _docstring_lines(node: ast.AST) -> int:
    documentable = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    if not isinstance(node, documentable) or not node.body:
        return 0
    body = node.body
    if not isinstance(body[0], ast.Expr):
        return 0
    value = body[0].value
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        return 0
    return body[0].end_lineno - body[0].lineno + 1


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", MODULES, ids=_module_id)
def test_module_fits_in_one_sitting(path):
    tree = _tree(path)
    lines = len(path.read_text().splitlines())
    documented = sum(_docstring_lines(node) for node in ast.walk(tree))
    assert lines - documented <= MAX_MODULE_LINES, (
        f"{_module_id(path)} has {lines - documented} lines besides docstrings; "
        f"split it (at most {MAX_MODULE_LINES})"
    )


@pytest.mark.parametrize("path", MODULES, ids=_module_id)
def test_functions_fit_on_one_screen(path):
    too_long = [
        f"{node.name} ({length} lines)"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := node.end_lineno - node.lineno + 1 - _docstring_lines(node))
        > MAX_FUNCTION_LINES
    ]
    assert not too_long, (
        f"{_module_id(path)}: functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    )


def _sparsam_imports(path: Path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").split(".")[0] == "sparsam"
        ):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=_module_id)
def test_no_private_name_is_imported_across_modules(path):
    private = [
        f"line {node.lineno}: {alias.name} from {'.' * node.level}{node.module or ''}"
        for node in _sparsam_imports(path)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not private, f"{_module_id(path)} imports private names: {private}"


@pytest.mark.parametrize(
    "path",
    [
        *(p for p in MODULES if "cli" not in p.relative_to(PACKAGE).parts[:1]),
        *sorted((PACKAGE.parent / "benchmarks").glob("*.py")),
    ],
    ids=_module_id,
)
def test_nothing_outside_the_command_line_imports_from_it(path):
    if path.name == "__main__.py" and path.parent == PACKAGE:
        return  # `python -m sparsam` is the command line's entry point
    text = path.read_text()
    tree = ast.parse(text)
    from_cli = [
        node.lineno
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.ImportFrom)
            and (
                (node.module or "").startswith(("sparsam.cli", "cli"))
                or (node.level > 0 and (node.module or "").split(".")[0] == "cli")
            )
        )
        or (
            isinstance(node, ast.Import)
            and any(alias.name.startswith("sparsam.cli") for alias in node.names)
        )
    ]
    assert not from_cli, f"{_module_id(path)} imports the command line at lines {from_cli}"
