"""The hub side of bench/e2e.py: one hubd on SQLite or PostgreSQL, or N replicas (issue 15).

``--store postgresql`` gives every run a fresh database on the machine's PostgreSQL
(127.0.0.1:5432, trust auth, as tests/hub/conftest.py ``pg_url``), dropped when the run
ends. ``--replicas N`` starts N hubd processes named a, b, ... with ``[replicas]
enabled`` on that database, each with the SAME signed directory file and every channel on
the bench's Mosquitto (replicas need an external broker for every channel). Before the
clock starts the replicas have split the 256 buckets (``hub_leases``) and each owns at
least one of the load's senders and one of its recipients; when the split leaves a
replica without either, the run starts again on a fresh database (a replica's id, and so
the buckets it prefers, is new each time).
"""

from __future__ import annotations

import secrets
import string
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hubd.core.leases import BUCKETS, bucket_of
from schemas.directory import Directory
from schemas.keys import SigningKey
from tests.hubproc import HubProcess

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
LEASE = "lease = 3.0\nrenew = 1.0\n"  # the defaults of hubd/config.py Replicas
SPLIT_WITHIN = 60.0  # seconds for the replicas to split the buckets
SPLIT_TRIES = 6  # fresh starts until each replica owns a sender and a recipient


class BenchSetupError(RuntimeError):
    """The bench could not set its hubs up (a sentence to act on, both languages)."""


def replica_names(count: int) -> list[str]:
    """``a``, ``b``, ... : a replica's name is the first part of its id in hub_leases."""
    if not 0 <= count <= len(string.ascii_lowercase):
        raise BenchSetupError(
            f"--replicas {count}：副本数须在 0 到 26 之间 / --replicas {count}: give 0 to 26 "
            "replicas (0: no [replicas] section)"
        )
    return list(string.ascii_lowercase[:count])


def psql(sql: str, database: str = "postgres") -> list[list[str]]:
    """Rows of one statement on the machine's PostgreSQL (fields split on ``|``)."""
    try:
        out = subprocess.run(  # noqa: S603 - the bench's own statement
            [*PSQL, "-d", database, "-At", "-F", "|", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise BenchSetupError(
            f"无法在 127.0.0.1:5432 上执行 PostgreSQL 语句，请确认服务器已运行且 postgres 用户"
            f"可免密登录 / psql failed on 127.0.0.1:5432 ({detail.strip()}); start PostgreSQL "
            "there with trust auth for the postgres user, or run without --store postgresql"
        ) from exc
    return [line.split("|") for line in out.splitlines() if line]


def create_database() -> str:
    name = f"govx_bench_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}")
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    psql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def lease_holders(db_url: str) -> dict[int, str]:
    """Bucket -> name of the replica holding its unexpired lease (the id's first part)."""
    rows = psql(
        "SELECT bucket, holder FROM hub_leases WHERE holder IS NOT NULL AND expires_at > "
        "(extract(epoch from now()) * 1000)::bigint",
        db_url.rsplit("/", 1)[1],
    )
    return {int(bucket): holder.split("-", 1)[0] for bucket, holder in rows}


def split_done(held: dict[int, str], names: Sequence[str]) -> bool:
    """Every bucket held, by the named replicas only, each holding some."""
    return len(held) == BUCKETS and set(held.values()) == set(names)


def owners_of(held: dict[int, str], orgs: Sequence[str]) -> dict[str, str]:
    """Organisation -> name of the replica owning its bucket ("" if none does)."""
    return {org: held.get(bucket_of(org), "") for org in orgs}


def spread(owners: dict[str, str], senders: Sequence[str], recipients: Sequence[str]) -> bool:
    """Whether every replica owns at least one sender and at least one recipient."""
    names = set(owners.values())
    return all(
        {owners[o] for o in group} == names and len(names) <= len(group)
        for group in (senders, recipients)
    )


@dataclass
class BenchHubs:
    """The hubd processes of one bench run and the database they share (if any)."""

    folder: Path
    hub_key: SigningKey
    directory: Directory
    broker_port: int
    store: str = "sqlite"  # "sqlite" | "postgresql"
    replicas: int = 0  # 0: one hub, no [replicas] section
    extra_toml: str = ""
    hubs: list[HubProcess] = field(default_factory=list)
    db_url: str = ""
    owners: dict[str, str] = field(default_factory=dict)  # org -> replica name
    tries: int = 0

    def __post_init__(self) -> None:
        if self.replicas and self.store != "postgresql":
            raise BenchSetupError(
                "副本需要 PostgreSQL 存储，请加 --store postgresql / --replicas needs "
                "--store postgresql: replicas share one PostgreSQL store"
            )

    def processes(self, attempt: int = 0) -> list[HubProcess]:
        """The hubd processes to start (not started): one, or one per replica name."""
        names = replica_names(self.replicas) or [""]
        made = []
        for name in names:
            extra = self.extra_toml
            if name:
                extra += f'\n[replicas]\nenabled = true\nname = "{name}"\n{LEASE}'
            made.append(
                HubProcess(
                    self.folder / f"try{attempt}-hub{'-' + name if name else ''}",
                    self.hub_key,
                    self.directory,
                    broker_port=self.broker_port,
                    store_url=self.db_url,
                    extra_toml=extra,
                )
            )
        return made

    def start(self, senders: Sequence[str], recipients: Sequence[str]) -> BenchHubs:
        """Start the hubs; with replicas, return once they split the buckets so that each
        owns one of ``senders`` and one of ``recipients`` (fresh starts until they do)."""
        for attempt in range(SPLIT_TRIES if self.replicas else 1):
            self.tries = attempt + 1
            if self.store == "postgresql":
                self.db_url = create_database()
            self.hubs = self.processes(attempt)
            for hub in self.hubs:
                hub.start()
            self._same_directory()
            if not self.replicas:
                return self
            held = self._wait_split()
            self.owners = owners_of(held, [*senders, *recipients])
            if spread(self.owners, senders, recipients):
                return self
            self.stop()
        raise BenchSetupError(
            f"{SPLIT_TRIES} 次启动后仍有副本不拥有任何发送方或接收方，请增加 --senders/--recipients"
            f" / after {SPLIT_TRIES} starts a replica still owned none of the load's senders "
            f"or recipients (last: {self.owners}); give more --senders and --recipients"
        )

    def _same_directory(self) -> None:
        files = {(h.folder / "keys" / "directory.bin").read_bytes() for h in self.hubs}
        if len(files) != 1:
            raise BenchSetupError(
                "各副本的已签名目录文件不一致 / the replicas' signed directory files differ; "
                "they must serve one signed directory: give them the same Directory"
            )

    def _wait_split(self) -> dict[int, str]:
        names = replica_names(self.replicas)
        deadline = time.monotonic() + SPLIT_WITHIN
        while time.monotonic() < deadline:
            held = lease_holders(self.db_url)
            if split_done(held, names):
                return held
            time.sleep(0.2)
        raise BenchSetupError(
            f"副本在 {SPLIT_WITHIN:.0f} 秒内未分完 {BUCKETS} 个桶，请查看各 hubd.log / the "
            f"replicas did not split the {BUCKETS} buckets within {SPLIT_WITHIN:.0f} s; see "
            f"the hubd.log files under {self.folder}"
        )

    def store_pids(self) -> list[int]:
        """The PostgreSQL server processes serving the hubs' connections to their database
        (none on SQLite): their CPU is the store's share of a document."""
        if not self.db_url:
            return []
        rows = psql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()",
            self.db_url.rsplit("/", 1)[1],
        )
        return [int(pid) for (pid,) in rows]

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self.hubs if h.process is not None]

    def label(self, index: int) -> str:
        return replica_names(self.replicas)[index] if self.replicas else "hub"

    def peak_rss_mb(self) -> float:
        return max(h.peak_rss_kib() for h in self.hubs) / 1024

    def terminate(self) -> None:
        """SIGTERM every hub (they drain), then drop the database."""
        try:
            for hub in self.hubs:
                if hub.process is not None and hub.process.poll() is None:
                    hub.terminate()
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill what still runs and drop the database (idempotent)."""
        for hub in self.hubs:
            hub.stop()
        if self.db_url:
            drop_database(self.db_url)
            self.db_url = ""

    def error_events(self) -> dict[str, int]:
        """Error events each hub logged (a replica defect shows here), by label."""
        return {
            self.label(i): sum(1 for e in hub.log_events() if e.get("level") == "error")
            for i, hub in enumerate(self.hubs)
        }
