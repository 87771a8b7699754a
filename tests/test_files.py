"""Writing without losing data (sparsam._files): the old file stays whole until the rename."""

import os
import stat

import pytest

from sparsam._files import atomic_write, check_writable_directory, replace_files


def test_the_old_file_stays_untouched_until_the_block_ends(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"old contents")
    with atomic_write(path) as file:
        file.write(b"new")
        file.flush()
        # Written beside the file, never into it: a reader sees the old file whole.
        assert path.read_bytes() == b"old contents"
        assert os.path.samefile(file.name, path) is False
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_an_exception_inside_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"old contents")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as file:
        file.write(b"half of the new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]


def test_text_mode_writes_utf8_without_newline_translation(tmp_path):
    path = tmp_path / "labels.csv"
    with atomic_write(path, "w") as file:
        file.write("größe\r\n")
    assert path.read_bytes() == "größe\r\n".encode()


def test_the_new_file_gets_the_umask_permissions_like_open(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "a") as file:
            file.write(b"x")
        with open(tmp_path / "b", "wb") as file:
            file.write(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "b").stat().st_mode
    )


def test_replace_files_puts_every_previous_file_back_when_a_rename_fails(tmp_path, monkeypatch):
    directory, staging = tmp_path / "out", tmp_path / "staging"
    directory.mkdir()
    staging.mkdir()
    for name in ("a", "b", "gone"):
        (directory / name).write_text(f"old {name}")
        (staging / name).write_text(f"new {name}")
    replace = os.replace

    def refuse_b(source, target):
        if str(target).endswith(os.sep + "b"):
            raise PermissionError("refused")
        return replace(source, target)

    monkeypatch.setattr(os, "replace", refuse_b)
    with pytest.raises(PermissionError):
        replace_files(directory, staging, ["a", "b"], remove=["gone"])
    assert {p.name: p.read_text() for p in directory.iterdir()} == {
        "a": "old a",
        "b": "old b",
        "gone": "old gone",
    }


def test_check_writable_directory_names_the_parameter_and_the_path(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_dir=.*a file.* is not a writable directory"):
        check_writable_directory(blocker / "sub", "checkpoint_dir")
    assert check_writable_directory(tmp_path / "new" / "dir", "x").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []
