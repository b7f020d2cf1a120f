"""hubctl's side of the admin socket: one request, one answer, blocking.

Three outcomes besides an answer, kept apart because hubctl acts differently on each:
:class:`HubNotRunningError` (no socket file, or nothing accepts on it: the hub is down, and the
store may be read or written directly), :class:`HubUnreachableError` (the hub may well be
running, but this user cannot reach it, or it did not answer in time: nothing may be
written behind its back), and :class:`~hubd.admin.protocol.HubRefusedError` (the hub answered no).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from hubd.admin.protocol import MAX_ANSWER, Op, ProtocolError, encode_request, parse_answer
from schemas.errors import XchgError

TIMEOUT = 30.0  # seconds for the whole exchange (a redelivery commits before it answers)


class HubNotRunningError(XchgError):
    """No hub serves on the socket: the file is missing, or nothing accepts on it."""


class HubUnreachableError(XchgError):
    """The socket exists but this exchange failed; the hub may be running."""


def ask(path: Path, op: Op, *, timeout: float = TIMEOUT, **args: Any) -> dict[str, Any]:
    """Send one request to the hub at ``path`` and return its result."""
    line = encode_request(op, **args)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            why = (
                "there is no socket file"
                if isinstance(exc, FileNotFoundError)
                else ("nothing accepts on it (left by a hub that was killed?)")
            )
            raise HubNotRunningError(f"no hub answers on {path}: {why}") from exc
        except PermissionError as exc:
            raise HubUnreachableError(
                f"permission denied on {path}: the admin socket is for root, the hub's user "
                "and the members of the hub's group"
            ) from exc
        except OSError as exc:
            raise HubUnreachableError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        try:
            sock.sendall(line)
            with sock.makefile("rb") as answers:
                answer = answers.readline(MAX_ANSWER + 1)
        except TimeoutError as exc:
            raise HubUnreachableError(
                f"the hub did not answer on {path} within {timeout:g} s; it may be busy: "
                "look at its log, then ask again"
            ) from exc
        except OSError as exc:
            raise HubUnreachableError(
                f"the exchange on {path} failed: {exc.strerror or exc}"
            ) from exc
    if not answer.endswith(b"\n"):
        if len(answer) > MAX_ANSWER:
            raise ProtocolError("answer.too_large", f"the answer exceeds {MAX_ANSWER} bytes")
        raise HubUnreachableError(f"the hub on {path} closed the connection without answering")
    return parse_answer(answer[:-1])
