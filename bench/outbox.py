"""What the spoke's completeness rule costs: one outbox scan with many drops waiting.

    python bench/outbox.py [--drops 200] [--files 5] [--rounds 20]

Fills an outbox with ``--drops`` folder drops of ``--files`` small files each, written
metadata first (so every drop waits out ``stable_for_unordered``: the dearest case, each
scan looks at every file), and as many one-file drops written metadata last, half of them
declaring their files. Times ``Outbox.scan`` (the pass the agent repeats every
``stable_for / 2`` while something settles) and prints the median per pass and per drop,
and the CPU the pass takes per second of settling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spoke.config import Limits
from spoke.outbox import Outbox

META = '"主送" = "jl.cc"\n"密级" = "内部"\n"文种" = "通知"\n"标题" = "t"\n'


def fill(outbox: Path, drops: int, files: int) -> None:
    for i in range(drops):
        (outbox / f"folder-{i:04d}.meta.toml").write_text(META, encoding="utf-8")
        folder = outbox / f"folder-{i:04d}"
        folder.mkdir()
        for j in range(files):
            (folder / f"附件{j}.pdf").write_bytes(b"%PDF" * 256)
        (outbox / f"file-{i:04d}.txt").write_bytes(b"text" * 256)
        declared = f'[[files]]\nname = "file-{i:04d}.txt"\nsize = 1024\n' if i % 2 else ""
        (outbox / f"file-{i:04d}.txt.meta.toml").write_text(META + declared, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    limits = Limits()
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Path(tmp) / "outbox"
        outbox.mkdir()
        fill(outbox, args.drops, args.files)
        # every pass does all its looking and claims nothing: the one-file drops are ready
        # from the second pass on (the declarations read each time), the folders wait out
        # stable_for_unordered for ever
        box = Outbox(outbox, Path(tmp) / "work", 1e-6, 1e9, 1e9)
        wall, cpu = [], []
        for round_ in range(args.rounds):
            w, c = time.perf_counter(), time.process_time()
            box.scan(now=float(round_))
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        drops = 2 * args.drops
        median = statistics.median(cpu)
        print(f"{drops} drops waiting ({args.drops} folders of {args.files} files, metadata first;")
        print(f"{args.drops} one-file drops, half declaring their files), {args.rounds} scans")
        print(
            f"scan: median {statistics.median(wall) * 1000:.1f} ms wall, {median * 1000:.1f} ms CPU"
        )
        print(f"per drop: {median / drops * 1e6:.0f} us CPU")
        every = limits.stable_for / 2
        print(
            f"settling with the default stable_for ({limits.stable_for:g} s, a scan every "
            f"{every:g} s): {median / every * 100:.1f}% of one core"
        )


if __name__ == "__main__":
    main()
