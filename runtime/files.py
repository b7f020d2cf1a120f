"""Durable, private file writes shared by hub and spoke tools.

Key files must be written and checked identically by ``hubctl`` and ``spoke``, and an
atomic write done slightly wrong loses documents (docs/architecture.md).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import ConfigError
from schemas.keys import EncryptionKey, SigningKey, load_secret_key

M = TypeVar("M", bound=BaseModel)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; an existing folder keeps its mode."""
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is narrowed by the umask; set it exactly


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of ``folder`` takes (255 where
    it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def atomic_write(path: Path, data: bytes, *, mode: int, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file: fsync, rename, fsync the folder.

    The file is created with ``mode`` from the start (never world-readable for a moment).
    With ``overwrite=False`` an existing file is left alone and FileExistsError raised.
    The temporary is ``.NAME.XXXXXXXX.tmp``, or ``.XXXXXXXX.tmp`` where a long NAME
    would make it too long for the file system.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    if len(os.fsencode(tmp.name)) > name_max(path.parent):
        tmp = path.with_name(f".{token}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; set exactly
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if not overwrite:
        # link() fails if the name was taken meanwhile; rename would silently replace it
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink()
    else:
        tmp.replace(path)
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """A secret file, mode 0600 from creation."""
    atomic_write(path, data, mode=PRIVATE_MODE, overwrite=overwrite)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def denied_sentence(exc: PermissionError, *, folder: Path | None = None, see: str = "") -> str:
    """One line, in both languages, for a file or folder this process was denied: which
    one, its owner and mode, who is running, and what fixes it (``see``: where the
    documentation sets it up, e.g. "docs/operations.md, Installing").

    The culprit is the path of ``exc`` if it exists, else its nearest existing folder (a
    file that could not be created in it, a folder that could not be made in it). ``folder``
    is the folder the command was to write into: the fix makes it (owned by the user
    running) if it does not exist, or gives it to that user if it does.
    """
    if exc.filename is None:
        return str(exc)
    asked = target = Path(os.fsdecode(exc.filename))
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        st = target.stat()
    except OSError:
        return str(exc)
    owner, group = _user(st.st_uid), _group(st.st_gid)
    me, uid = _user(os.geteuid()), os.geteuid()
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    where = f"{' see ' + see + ';' if see else ''}"
    where_zh = f"参见 {see}；" if see else ""
    if target != asked:  # a file or folder could not be made in it
        fix = f"chown {me}: {target}"
        if folder is not None and not folder.exists():
            fix = f"install -d -o {me} -g {_group(os.getegid())} -m 0750 {folder}"
        elif folder is not None:
            fix = f"chown {me}: {folder}"
        return (
            f"无权在目录 {target} 中写入（属主 {owner}:{group}，权限 {mode}，当前用户 {me}）；"
            f"{where_zh}请以 root 执行 {fix} / permission denied: the folder {target} is "
            f"owned by {owner}:{group} with mode {mode}, and {me} (uid {uid}), who runs this, "
            f"may not write in it;{where} as root run: {fix}"
        )
    kind, kind_zh = ("folder", "目录") if target.is_dir() else ("file", "文件")
    return (
        f"无权打开{kind_zh} {target}（属主 {owner}:{group}，权限 {mode}，当前用户 {me}）；"
        f"{where_zh}请以 {owner} 身份（sudo -u {owner}）或 root 运行本命令 / permission "
        f"denied: the {kind} {target} is owned by {owner}:{group} with mode {mode}, and "
        f"{me} (uid {uid}), who runs this, may not open it;{where} run this command as "
        f"{owner} (sudo -u {owner}) or as root"
    )


def read_private(path: Path) -> bytes:
    """Read a secret file; PermissionError if group or others may read or write it."""
    with path.open("rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PermissionError(f"{path} is not a regular file")
        loose = stat.S_IMODE(st.st_mode) & 0o077
        if loose:
            raise PermissionError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; a private key must be "
                f"readable by its owner only. Run: chmod 600 {path}"
            )
        return handle.read()


def load_signing_key(path: Path) -> tuple[str, SigningKey]:
    """(owner, key) from a private signing-key file; refuses loose permissions."""
    owner, key = load_secret_key(read_private(path), source=str(path))
    if not isinstance(key, SigningKey):
        raise ValueError(f"key file {path} holds an encryption key, not a signing key")
    return owner, key


def load_encryption_key(path: Path) -> tuple[str, EncryptionKey]:
    owner, key = load_secret_key(read_private(path), source=str(path))
    if not isinstance(key, EncryptionKey):
        raise ValueError(f"key file {path} holds a signing key, not an encryption key")
    return owner, key


def read_config(path: Path, model: type[M]) -> M:
    """Read a TOML configuration file into ``model``; ConfigError lists every problem with
    the file name and the key path."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read it: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("", f"not valid TOML: {exc}")]) from exc
    except RecursionError:  # 'a = [[[[...': deeper than the TOML parser goes
        raise ConfigError(
            str(path), [("", "not a configuration: its arrays nest too deeply")]
        ) from None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
            for err in exc.errors()
        ]
        raise ConfigError(str(path), problems) from exc
