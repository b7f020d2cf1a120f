from __future__ import annotations

import pytest

from tests.world import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    """The Jilin exchange with fresh keys; shared (read-only) by every test in the session."""
    return make_world()
