"""Run the fuzz targets and report, per target, inputs, inputs/s and coverage.

``python fuzz/run.py --runs 1000000`` (``make fuzz``), ``--seconds 6`` per target, or
``--total-seconds 60`` divided among the targets (``make fuzz-short``, part of ``make
check``: a new target takes its share of the minute rather than lengthening it); name
targets to run only those (``envelope metadata``). Each target starts from its committed
seeds (fuzz/corpus/<target>/) and writes what it finds new to fuzz/work/<target>/
(``--fresh``: a temporary folder), and a crashing input to
fuzz/artifacts/<target>/crash-<sha1> (both folders are ignored by git).
The figures are libFuzzer's own: executed units and their average rate from
``-print_final_stats``, ``cov`` (instrumented edges reached) and ``ft`` (features) from
its last status line. Exits 1 if any target crashed, timed out or ran out of memory.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = (
    "envelope", "transport", "receipts", "directory", "presence", "admin", "metadata",
    "ledger", "inner", "keys", "evidence", "http", "dirtree", "slots",
)  # fmt: skip
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


@dataclass
class Outcome:
    target: str
    ok: bool
    runs: int = 0
    per_second: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    seconds: float = 0.0
    problem: str = ""


def parse(target: str, output: str, returncode: int, seconds: float) -> Outcome:
    """The figures of one libFuzzer run from its output."""
    outcome = Outcome(target, ok=returncode == 0, seconds=seconds)
    for line in output.splitlines():
        if status := _STATUS.match(line):
            outcome.runs = int(status[1])
            outcome.cov, outcome.ft, outcome.corpus = int(status[2]), int(status[3]), int(status[4])
        elif stat := _STAT.match(line):
            if stat[1] == "number_of_executed_units":
                outcome.runs = int(stat[2])
            elif stat[1] == "average_exec_per_sec":
                outcome.per_second = int(stat[2])
    if not outcome.ok:
        found = re.search(r"(crash|timeout|oom|leak)-[0-9a-f]+", output)
        outcome.problem = found[0] if found else f"exit status {returncode}"
    return outcome


def shares(total: int, count: int) -> list[int]:
    """``total`` whole seconds divided among ``count`` targets (the first ones take the
    remainder), at least one each: libFuzzer's -max_total_time counts whole seconds."""
    return [max(1, total // count + (i < total % count)) for i in range(count)]


def run(target: str, limit: list[str], work: Path) -> Outcome:
    corpus = HERE / "corpus" / target
    artifacts = HERE / "artifacts" / target
    folder = work / target
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = work / f"{target}.log"
    command = [
        sys.executable, str(HERE / f"fuzz_{target}.py"), *limit,
        "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/", str(folder), str(corpus),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    outcome = parse(target, done.stderr + done.stdout, done.returncode, time.monotonic() - started)
    if not outcome.ok:
        print(f"--- {target}: {outcome.problem} (whole log: {log})", flush=True)
        print(what_failed(done.stderr + done.stdout), "---", sep="\n", flush=True)
    return outcome


def what_failed(output: str) -> str:
    """atheris's account of the uncaught exception (its traceback), else libFuzzer's tail."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "Uncaught Python exception" in line), None)
    if start is None:
        return "\n".join(lines[-30:])
    end = next((i for i in range(start, len(lines)) if "ERROR: libFuzzer" in lines[i]), start + 40)
    return "\n".join(lines[start : end + 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {' '.join(TARGETS)} (all)")
    limit = parser.add_mutually_exclusive_group(required=True)
    limit.add_argument("--runs", type=int, help="inputs per target (libFuzzer -runs)")
    limit.add_argument("--seconds", type=int, help="seconds per target (-max_total_time)")
    limit.add_argument("--total-seconds", type=int, help="seconds for all, divided evenly")
    parser.add_argument("--fresh", action="store_true", help="new inputs to a temporary folder")
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"no target {unknown[0]!r}; the targets are {', '.join(TARGETS)}")
    if args.runs:
        flags = [[f"-runs={args.runs}"]] * len(targets)
    else:
        seconds = shares(args.total_seconds, len(targets)) if args.total_seconds else None
        flags = [[f"-max_total_time={s}"] for s in seconds or [args.seconds] * len(targets)]
    with tempfile.TemporaryDirectory(prefix="govxchg-fuzz-") as tmp:
        work = Path(tmp) if args.fresh else HERE / "work"
        outcomes = []
        for target, flag in zip(targets, flags, strict=True):
            outcome = run(target, flag, work)
            outcomes.append(outcome)
            print(
                f"{target:10} {'ok' if outcome.ok else 'FAILED':6} {outcome.runs:>10,} inputs "
                f"{outcome.per_second:>8,}/s  cov {outcome.cov:>5}  ft {outcome.ft:>6}  "
                f"corpus {outcome.corpus:>5}  {outcome.seconds:7.1f} s {outcome.problem}",
                flush=True,
            )
    failed = [o.target for o in outcomes if not o.ok]
    if failed:
        print(f"fuzz: {', '.join(failed)} failed; inputs in fuzz/artifacts/<target>/")
        return 1
    print(f"fuzz: {len(outcomes)} targets, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
