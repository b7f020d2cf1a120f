"""docs/operations.md's runbooks run as written, in the documented Debian layout, as the
service user where the document says so (tests/runbook.py: how, and what is mapped)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runbook import (
    Namespace,
    Operator,
    Service,
    StepFailed,
    make_root,
    namespace_problem,
    steps,
)

pytestmark = pytest.mark.skipif(
    namespace_problem() is not None, reason=str(namespace_problem())
)


@pytest.fixture
def operator() -> Iterator[Operator]:
    root = make_root()
    ns = Namespace(root).start()
    hub = Service(ns, root)
    op = Operator(ns, hub, home=str(root / "home"), backup=str(root / "backup"))
    try:
        yield op
    finally:
        op.stop_spokes()
        hub.kill()
        ns.stop()
        shutil.rmtree(root, ignore_errors=True)


def walk(op: Operator, runbook: str, **placeholders: str) -> None:
    op.placeholders = placeholders
    for step in steps(runbook):
        op.do(step)


def walk_or_fail(op: Operator, runbook: str, **placeholders: str) -> None:
    """Walk a runbook; a failed step fails the test with the step, the command, its output."""
    failure = ""
    try:
        walk(op, runbook, **placeholders)
    except StepFailed as exc:
        failure = str(exc)
    if failure:
        pytest.fail(f"{failure}\n\nwhat ran before:\n{op.walk.summary()}", pytrace=False)


def test_the_install_runbook_runs_as_written_and_the_hub_serves(operator: Operator) -> None:
    walk_or_fail(operator, "install")
    print(operator.walk.summary())
    assert operator.hub.process is not None and operator.hub.process.poll() is None
    if operator.walk.defects:
        pytest.xfail("; ".join(f"{o.step}: {o.defect}" for o in operator.walk.defects))
