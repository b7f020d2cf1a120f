"""The document rules (行文规则) at the sending spoke, on exactly what will be sealed.

Once :func:`spoke.outbox.prepare` has expanded the groups, a drop becomes a
:class:`schemas.rules.Document` (``Document.from_metadata``, which assigns the 份号 and
which ``hubctl route`` uses too), and with ``auto_cc`` (自动抄送) the organs a skip-level
document skips are added to cc, and renumbered, before the file key is sealed for them.
The rules then run with the settings the signed directory carries, as the hub will run
them; the spoke has no store, so a 批复's 请示 is left to the hub (``looked_up=False``).
``spoke send --dry-run`` builds the same Document. Pure: no I/O.
"""

from __future__ import annotations

from schemas.directory import Directory
from schemas.rules import Document, Evaluation, evaluate, settings_of
from schemas.whatif import with_auto_cc
from spoke.refusals import Refusal


def copied_as_needed(
    doc: Document, directory: Directory, *, auto_cc: bool
) -> tuple[Document, tuple[str, ...]]:
    """``doc`` with the skipped organs copied when ``auto_cc`` asks, and those it added."""
    if not auto_cc:
        return doc, ()
    return with_auto_cc(doc, directory, settings_of(directory))


def judge(doc: Document, directory: Directory) -> Evaluation:
    """Every rule's verdict, under the directory's settings; Refusal if one is enforced.

    The warnings (rules set to ``warn``) are in the returned evaluation."""
    evaluation = evaluate(doc, directory, settings_of(directory), looked_up=False)
    if evaluation.refusals:
        raise rule_refusal(evaluation, directory.version)
    return evaluation


def rule_refusal(evaluation: Evaluation, directory_version: int) -> Refusal:
    """The refusal for a document the enforced rules refuse: every finding, the first's code."""
    findings = evaluation.refusals
    ids = list(dict.fromkeys(f.rule.id for f in findings))
    rules = ", ".join(ids)
    plural = "s" if len(ids) > 1 else ""
    hint = (
        "Correct what each finding names and drop the document again; docs/rules.md explains "
        "every rule, and 'spoke send --dry-run' checks a document without sending it."
    )
    hint_zh = (
        "请按每条说明修改后重新投递；docs/rules.md 解释了每条规则，"
        "'spoke send --dry-run' 可在不发送的情况下检查文件。"
    )
    if evaluation.add_cc:
        hint += (
            f" To copy the skipped organs ({', '.join(evaluation.add_cc)}) automatically, set "
            "auto_cc = true (自动抄送) in the metadata, or use 'spoke send --auto-cc'."
        )
        hint_zh += (
            f"如需自动抄送被越过的机关（{'、'.join(evaluation.add_cc)}），请在元数据中写 "
            "自动抄送 = true（auto_cc），或使用 'spoke send --auto-cc'。"
        )
    return Refusal(
        findings[0].rule.reason,
        f"it breaks the document rule{plural} (行文规则) {rules}, which the hub enforces "
        f"(settings of directory v{directory_version}); each finding below names the article, "
        "the values and what to do.",
        hint,
        {
            "rules": [f"rule.{i}" for i in ids],
            "directory_version": directory_version,
            "add_cc": list(evaluation.add_cc),
        },
        findings,
        message_zh=f"违反了枢纽执行的行文规则 {rules}（第 {directory_version} 版目录的设置）；"
        "下面每条说明列出条款、取值和处理办法。",
        hint_zh=hint_zh,
    )
