"""Where a large body lives: a file in the spool folder, or pieces in the store.

The message row keeps the place as text in ``body_path``: a file's path, or ``store:``
and the message id's text for a body kept in the store's ``spool_pieces`` (replicas share
it; hubd.store.sharedspool). Pure: the dispatcher, the job rows and retention read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from schemas.ids import msg_id_text, parse_msg_id

STORE_PREFIX: Final = "store:"


@dataclass(frozen=True, slots=True)
class StoredBody:
    """A finished body kept as pieces in the store, keyed by its message id."""

    msg_id: bytes

    def __str__(self) -> str:
        return STORE_PREFIX + msg_id_text(self.msg_id)


BodyRef = Path | StoredBody


def body_ref(text: str | None) -> BodyRef | None:
    """The place a ``body_path`` column names (None: no spooled body)."""
    if text is None:
        return None
    if text.startswith(STORE_PREFIX):
        return StoredBody(parse_msg_id(text.removeprefix(STORE_PREFIX)))
    return Path(text)
