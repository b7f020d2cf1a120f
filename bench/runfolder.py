"""A bench run's folder in /tmp: removed when the run ends well, kept (and named) when it
fails, so a hub's log and store are there to read, and a run of a 1 GiB document does not
leave its gigabytes behind."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def kept_on_failure(folder: Path, *, keep: bool = False) -> Iterator[Path]:
    """``folder`` for the block; removed after it unless it failed or ``keep`` is set."""
    try:
        yield folder
    except BaseException:
        print(f"the run's folder is kept for its logs: {folder}", file=sys.stderr)
        raise
    if keep:
        print(f"the run's folder is kept: {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)
