"""What ``spoke status`` says first while the witness has an open alarm: one line each, in
both languages, saying what happened and what to do (docs/integrators.md)."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.clock import ms_to_text
from spoke.state import LedgerAlarm


def reset_command(config: str) -> str:
    """The command that closes the alarms, whole (as docs/integrators.md shows it)."""
    return (
        f"spoke witness reset --config {config} --accept-current --by 姓名/NAME --reason 原因/WHY"
    )


def fork_sentence(alarm: LedgerAlarm, config: str = "spoke.toml") -> str:
    """A fork: the hub signed two checkpoints that cannot both be true."""
    return (
        f"账本分叉 / LEDGER FORK: 枢纽签发了两个互相矛盾的账本检查点（持有 {alarm.held_size}，"
        f"新 {alarm.new_size}），请告知枢纽运维人员和本单位安全保密负责人并保留文件夹 "
        f"{alarm.folder} / the hub signed two checkpoints that cannot both be true (held size "
        f"{alarm.held_size}, new size {alarm.new_size}, {ms_to_text(alarm.at)}): tell the hub "
        "operator and your security officer, keep that folder; once they have settled it, "
        f"run '{reset_command(config)}'"
    )


def restored_sentence(alarm: LedgerAlarm, config: str = "spoke.toml") -> str:
    """A declared restore: the hub lost a range of its ledger and said so."""
    lost_from = alarm.lost_from if alarm.lost_from is not None else alarm.new_size
    lost = f"{lost_from + 1}..{alarm.held_size}"
    return (
        f"账本已恢复 / ledger restored: 枢纽声明其账本已从备份恢复，第 {lost} 条记录丢失"
        f"（{alarm.why[:120]}），请向枢纽运维人员核实此次恢复，为该范围内收发的文件保留证据"
        f"（spoke prove），旧检查点保存在 {alarm.folder} / the hub declared it restored its "
        f"ledger from a backup ({ms_to_text(alarm.at)}): entries {lost} are lost. Confirm "
        "with the hub operator that the restore was announced, keep evidence of the "
        "documents sent or received in that range (spoke prove), the old checkpoint is in "
        f"that file; then run '{reset_command(config)}'"
    )


def unproven_sentence(alarm: LedgerAlarm, config: str = "spoke.toml") -> str:
    """An unproven checkpoint: the hub did not show that it extends the held one."""
    return (
        f"账本无法验证 / ledger unproven: 枢纽未能证明其检查点（{alarm.new_size}）与本机持有的"
        f"检查点（{alarm.held_size}）属于同一账本历史，新检查点未被采纳；若下一个检查点得到证明，"
        f"告警自动解除，否则请告知枢纽运维人员 / the hub did not prove that its checkpoint of "
        f"size {alarm.new_size} and the held one of size {alarm.held_size} are one history "
        f"({ms_to_text(alarm.at)}; {alarm.why[:160]}); the new one is not adopted. The alarm "
        "closes by itself when a later checkpoint is proven; if it stays, ask the hub "
        f"operator why the hub does not answer, and once settled run '{reset_command(config)}'"
    )


SENTENCES = {"fork": fork_sentence, "restored": restored_sentence, "unproven": unproven_sentence}
ORDER = ("fork", "unproven", "restored")  # the most serious first


def alarm_lines(alarms: Sequence[LedgerAlarm], config: str) -> list[str]:
    """One line per open alarm, forks first."""
    open_ = [a for a in alarms if a.cleared_at is None and a.kind in SENTENCES]
    open_.sort(key=lambda a: ORDER.index(a.kind))
    return [SENTENCES[a.kind](a, config) for a in open_]
