"""The `sparsam` command line and the README's quickstart run as documented."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sparsam.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_demo_prints_a_few_shot_table_for_three_methods(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch is too short to escape a CollapseWarning
        assert main(["demo", "--epochs", "1", "--quiet"]) == 0
    output = capsys.readouterr().out
    for row in ("DINO features + SVC", "untrained backbone + SVC", "raw pixels + SVC"):
        assert re.search(rf"^{re.escape(row)}(\s+\d\.\d{{3}} ± \d\.\d{{3}}){{4}}$", output, re.M)
    assert "N=1" in output and "N=25" in output


def test_demo_is_reachable_as_python_dash_m_sparsam():
    result = subprocess.run(
        [sys.executable, "-m", "sparsam", "demo", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--epochs" in result.stdout


def test_unknown_command_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as error:
        main(["nonsense"])
    assert error.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
