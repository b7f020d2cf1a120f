"""A document's terms: the deadlines and marks its sender sets for what happens after
delivery (issue 16), signed in its header so that the hub can remind and every recipient
can trust them.

    terms = {"accept_by": ms | nil, "case": str | nil, "done_by": ms | nil,
             "drill": bool, "sign_by": ms | nil}

- ``sign_by`` 签收时限: every recipient signs for it (签收) by then. On a 应急 document at
  特提 (FLASH) it is the acknowledgement the emergency flow waits for, minutes away.
- ``done_by`` 办理时限: every recipient reports it handled (办结) by then; on a 请示, its
  批复 by then.
- ``case`` 信访件编号 and ``accept_by`` 受理时限: a petition's case number, and when the organ
  responsible must have decided whether to accept it (信访工作条例 2022: 15 days).
- ``drill`` 演练: an emergency notice sent as an exercise, marked as one everywhere.

The header carries ``terms`` only when the sender set one (absent, not nil, otherwise), so
a header without terms is byte for byte what it was before them, and a reader of that
release refuses a header with them rather than drop them unseen.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from schemas.directory import Millis
from schemas.labels import DocType
from schemas.model import WireModel

CASE_PATTERN = r"^[0-9A-Za-z\u4e00-\u9fff〔〕()（）\-]{1,64}$"


class Terms(WireModel):
    """What a sender asks of its recipients after delivery, and by when."""

    sign_by: Millis | None  # 签收时限
    done_by: Millis | None  # 办理时限 (a 请示: its 批复)
    case: Annotated[str, Field(pattern=CASE_PATTERN)] | None  # 信访件编号
    accept_by: Millis | None  # 信访件受理时限
    drill: bool  # 演练

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.empty:
            raise ValueError("terms that set nothing are left out of the header, not sent empty")
        return self

    @property
    def empty(self) -> bool:
        return (
            self.sign_by is None
            and self.done_by is None
            and self.case is None
            and self.accept_by is None
            and not self.drill
        )

    @property
    def deadlines(self) -> dict[str, int]:
        """The deadlines set, by name."""
        found = {"sign_by": self.sign_by, "accept_by": self.accept_by, "done_by": self.done_by}
        return {name: at for name, at in found.items() if at is not None}


def terms_problem(terms: Terms, doc_type: DocType, created_at: int) -> str | None:
    """Why ``terms`` cannot go with a document of ``doc_type`` sealed at ``created_at``
    (None: they can). Checked by the hub and by every recipient (envelope.bad_label)."""
    for name, at in terms.deadlines.items():
        if at <= created_at:
            return f"terms.{name} ({at}) is not after the document's created_at ({created_at})"
    if (
        terms.accept_by is not None
        and terms.done_by is not None
        and terms.accept_by > terms.done_by
    ):
        return "terms.accept_by is after terms.done_by: a petition is accepted before it is handled"
    if doc_type is not DocType.PETITION and (terms.case is not None or terms.accept_by is not None):
        return (
            f"a case number and accept_by belong to a petition (信访件), not to a {doc_type.name}"
        )
    if terms.drill and doc_type is not DocType.EMERGENCY:
        return f"only an emergency notice (应急) is a drill, not a {doc_type.name}"
    return None
