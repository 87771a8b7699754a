"""Every Python block of README.md and of the documentation pages (docs/**/*.md) runs as
written, so neither can drift from the code.

A block that needs data, the Hub or a GPU carries the comment
``<!-- readme-test: skip (reason) -->`` on the line before its fence and is skipped with that
reason; its imports still run and every call of an imported function or class is checked
against that callable's signature, so a renamed parameter fails here too. A long block carries
``<!-- readme-test: slow -->`` and runs with the slow tests.
"""

import ast
import contextlib
import inspect
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparsam.dino import CollapseWarning

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# README first: its blocks keep their plain section names (``quickstart``).
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^\s*```\s*(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(skip|slow)\s*(?:\((.+)\))?\s*-->\s*$")
HEADING = re.compile(r"^#+\s+(.*?)\s*$")
# The Quickstart's promise: DINO features beat the same backbone untrained by a clear margin.
# Measured gains are about twice this (README); single runs move by a few hundredths.
QUICKSTART_MIN_GAIN = 0.10


@dataclass(frozen=True)
class Block:
    document: Path
    name: str
    line: int
    source: str
    skip: str | None
    slow: bool


def readme_blocks(text: str, document: Path = README) -> list[Block]:
    """The ```python blocks of ``text``, named after their section, with their markers.

    Blocks of another document than the README are named ``<path>:<section>``.
    """
    prefix = "" if document == README else f"{document.relative_to(ROOT).as_posix()}:"
    blocks, names = [], {}
    lines = text.splitlines()
    section, marker, index = "top", None, 0
    while index < len(lines):
        line = lines[index]
        if heading := HEADING.match(line):
            section = re.sub(r"[^a-z0-9]+", "-", heading[1].lower()).strip("-")
        fence = FENCE.match(line)
        if fence is None:
            marker = MARKER.match(line) or (marker if not line.strip() else None)
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if FENCE.match(lines[i]))
        if fence[1] == "python":
            names[section] = names.get(section, 0) + 1
            name = section if names[section] == 1 else f"{section}-{names[section]}"
            blocks.append(
                Block(
                    document=document,
                    name=prefix + name,
                    line=index + 1,
                    source="\n".join(lines[index + 1 : end]) + "\n",
                    skip=marker[2] if marker and marker[1] == "skip" else None,
                    slow=bool(marker) and marker[1] == "slow",
                )
            )
        marker, index = None, end + 1
    return blocks


BLOCKS = [
    block
    for document in DOCUMENTS
    for block in readme_blocks(document.read_text(encoding="utf-8"), document)
]


def block_filename(block: Block) -> str:
    """The file name tracebacks and warnings give for lines of ``block``."""
    return f"{block.document}:{block.name}"


def where(block: Block, offset: int = 0) -> str:
    return f"{block.document.relative_to(ROOT).as_posix()} line {block.line + offset}"


def run_block(block: Block) -> tuple[dict, str, list[warnings.WarningMessage]]:
    """Execute ``block`` in a fresh namespace: the namespace, its stdout, its warnings."""
    namespace = {"__name__": "__main__"}
    output = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(output),
    ):
        warnings.simplefilter("always")
        exec(compile(block.source, block_filename(block), "exec"), namespace)
    print(output.getvalue())  # shown by pytest -s and on failure
    return namespace, output.getvalue(), caught


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def block_by_name(name: str) -> Block:
    return next(block for block in BLOCKS if block.name == name)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_python_fence_of_the_document_is_collected(document):
    text = document.read_text(encoding="utf-8")
    python_fences = [
        line for line in text.splitlines() if re.match(r"^\s*```\s*py(thon)?\w*\s*$", line)
    ]
    markers = [line for line in text.splitlines() if "readme-test" in line]
    blocks = [block for block in BLOCKS if block.document == document]

    assert len(blocks) == len(python_fences)
    assert all(MARKER.match(line) for line in markers), markers
    assert sum(block.skip is not None or block.slow for block in blocks) == len(markers)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(block, id=block.name, marks=[pytest.mark.slow] if block.slow else [])
        for block in BLOCKS
    ],
)
def test_readme_python_block_runs_as_written_without_warnings(block, executed):
    if block.skip is not None:
        pytest.skip(f"{where(block)}: {block.skip}")

    _, _, caught = executed(block)

    # A reader copies the block: a CollapseWarning, or any warning raised by a line of the
    # block itself (a deprecated parameter, an untrained backbone), would greet them.
    unexpected = [
        warning
        for warning in caught
        if issubclass(warning.category, CollapseWarning)
        or warning.filename == block_filename(block)
    ]
    assert not unexpected, [f"{w.category.__name__}: {w.message}" for w in unexpected]


@pytest.mark.parametrize(
    "block", [pytest.param(block, id=block.name) for block in BLOCKS if block.skip is not None]
)
def test_skipped_readme_block_calls_existing_names_with_existing_parameters(block):
    tree = ast.parse(block.source, filename=block_filename(block))
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    namespace = {}
    try:
        exec(
            compile(ast.Module(imports, type_ignores=[]), block_filename(block), "exec"), namespace
        )
    except ModuleNotFoundError as error:
        if error.name.split(".")[0] in ("sparsam", "sklearn", "timm", "torch", "numpy"):
            raise
        pytest.skip(f"{where(block)}: {error.name} is not installed here")

    for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        target = _resolve(call.func, namespace)
        if target is None:
            continue  # a method of an object the block builds, e.g. featurizer.fit
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue  # a builtin without a signature
        positional = [None] * sum(not isinstance(arg, ast.Starred) for arg in call.args)
        keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg is not None}
        try:
            signature.bind_partial(*positional, **keywords)
        except TypeError as error:
            pytest.fail(f"{where(block, call.lineno)}: {ast.unparse(call)}: {error}")


def _resolve(node: ast.expr, namespace: dict):
    """The object a dotted name (``timm.create_model``) refers to after the imports, or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        if inspect.ismodule(owner):
            return getattr(owner, node.attr)
    return None


@pytest.mark.slow
def test_quickstart_dino_features_beat_the_untrained_backbone(executed):
    namespace, output, _ = executed(block_by_name("quickstart"))
    accuracy = namespace["accuracy"]

    assert accuracy["DINO features"] - accuracy["untrained backbone"] >= QUICKSTART_MIN_GAIN, (
        accuracy
    )
    assert "DINO features" in output and "untrained backbone" in output
