"""runtime.files.denied_sentence: the one line for a refused file or folder names it, its
owner and mode, who ran the command and what fixes it (the errors are built here; the
tests that drop to another user are in tests/ops/test_install_docs.py)."""

from __future__ import annotations

import errno
import os
import pwd
from pathlib import Path

from runtime.files import denied_sentence

ME = pwd.getpwuid(os.geteuid()).pw_name


def denied(path: Path) -> PermissionError:
    return PermissionError(errno.EACCES, "Permission denied", str(path))


def test_a_file_that_cannot_be_opened_is_named_with_its_owner_and_who_may_open_it(
    tmp_path: Path,
) -> None:
    key = tmp_path / "hub.sign.key"
    key.write_bytes(b"")
    key.chmod(0o600)

    line = denied_sentence(denied(key))

    assert "\n" not in line
    assert f"无权打开文件 {key}" in line
    assert f"the file {key} is owned by {ME}:" in line
    assert "with mode 0600" in line
    assert f"run this command as {ME} (sudo -u {ME}) or as root" in line


def test_a_file_that_cannot_be_made_names_the_folder_and_how_to_make_the_one_wanted(
    tmp_path: Path,
) -> None:
    wanted = tmp_path / "hub"

    line = denied_sentence(denied(wanted / ".hub.sign.key.1234.tmp"), folder=wanted, see="X")

    assert f"the folder {tmp_path} is owned by {ME}:" in line
    assert f"as root run: install -d -o {ME} -g " in line
    assert f"-m 0750 {wanted}" in line
    assert "see X;" in line


def test_an_error_without_a_path_is_left_as_it_is() -> None:
    exc = PermissionError("jl.cc.sign.key has mode 0644; run: chmod 600 jl.cc.sign.key")

    assert denied_sentence(exc) == str(exc)
