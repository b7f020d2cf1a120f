"""The organisation tree, a page at a time (``/status/orgs.json``).

With 10,000 organisations the whole tree is megabytes: the page asks for it only when
the operator opens it, one level and one page at a time: the organisations directly
below ``under`` (the top of the tree when it is absent), from ``offset``, at most
``limit`` of them (:data:`PAGE_MAX`). Each row says how many organisations sit directly
below it, so the page can offer to open it.

Pure, like :mod:`hubd.web.statusview`: the rows are built from the same
:class:`~hubd.web.statusview.Facts` as the summary, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hubd.web.statusview import Facts, org_row
from schemas.directory import Directory, OrgEntry

PAGE_DEFAULT = 100  # organisations per page unless the page asks for fewer or more
PAGE_MAX = 500  # however many it asks for


@dataclass(frozen=True, slots=True)
class TreeNode:
    org: OrgEntry
    children: tuple[TreeNode, ...]
    orphan: bool = False  # its parent is not in the directory (or it sits in a cycle)

    def walk(self) -> Iterator[OrgEntry]:
        yield self.org
        for child in self.children:
            yield from child.walk()


def org_tree(directory: Directory) -> tuple[TreeNode, ...]:
    """The organisations as a forest along their ``parent`` links, in directory order.

    Roots are organisations without a parent; one whose parent is not in the directory, or
    that sits in a parent cycle, is shown as a root marked ``orphan`` rather than left out.
    """
    ids = {org.id for org in directory.orgs}
    children: dict[str | None, list[OrgEntry]] = {}
    for org in directory.orgs:
        parent = org.parent if org.parent in ids and org.parent != org.id else None
        children.setdefault(parent, []).append(org)
    placed: set[str] = set()

    def grow(org: OrgEntry, *, orphan: bool = False) -> TreeNode:
        placed.add(org.id)
        kids = tuple(grow(c) for c in children.get(org.id, []) if c.id not in placed)
        return TreeNode(org, kids, orphan)

    roots = [grow(org, orphan=org.parent is not None) for org in children.get(None, [])]
    # Whatever is still unplaced hangs in a parent cycle: show each cycle from its first org.
    roots.extend(grow(org, orphan=True) for org in directory.orgs if org.id not in placed)
    return tuple(roots)


class OrgTree:
    """One directory's tree as an index: who sits directly below whom. Built once per
    directory (the hub keeps the last one), read per page."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.below: dict[str | None, tuple[OrgEntry, ...]] = {}
        self.orphans: set[str] = set()
        stack: list[tuple[str | None, tuple[TreeNode, ...]]] = [(None, org_tree(directory))]
        while stack:
            parent, nodes = stack.pop()
            self.below[parent] = tuple(node.org for node in nodes)
            for node in nodes:
                if node.orphan:
                    self.orphans.add(node.org.id)
                stack.append((node.org.id, node.children))

    def __contains__(self, org_id: object) -> bool:
        return org_id in self.below

    def page(self, facts: Facts, under: str | None, offset: int, limit: int) -> dict[str, Any]:
        """The organisations directly below ``under`` (None: the top of the tree), from
        ``offset``, at most ``limit``; ``next_offset`` is null on the last page."""
        level = self.below.get(under, ())
        chosen = level[offset : offset + limit]
        rows = [
            {
                **org_row(facts, org),
                "orphan": org.id in self.orphans,
                "children": len(self.below.get(org.id, ())),
            }
            for org in chosen
        ]
        end = offset + len(chosen)
        return {
            "at": facts.at,
            "directory_version": self.directory.version,
            "under": under,
            "offset": offset,
            "limit": limit,
            "total": len(level),
            "next_offset": end if end < len(level) else None,
            "orgs": rows,
        }
