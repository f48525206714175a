"""Validation records shared by every reader: one :class:`Problem` per bad record.

Readers are lenient by default: they skip (or repair) the bad record, keep going and add a
:class:`Problem` to the :class:`Report`. With ``strict=True`` the first problem raises
:class:`DataError` before any work is done. Structural problems (broken JSON, duplicate
ids, missing categories) raise :class:`DataError` in both modes.
"""
from __future__ import annotations

import dataclasses
import json


class DataError(ValueError):
    """A dataset problem that stops loading; its message names the file and the record."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One validation finding.

    ``file``: the file concerned (annotation or image); ``record``: the annotation id,
    object index or field inside it (``""`` when the whole file is concerned);
    ``problem``: what is wrong; ``action``: what was done (``skipped image``,
    ``dropped box``, ``clipped box``, ``converted to RGB`` ...).
    """

    file: str
    record: str
    problem: str
    action: str

    def __str__(self):
        where = f"{self.file}" + (f" [{self.record}]" if self.record else "")
        return f"{where}: {self.problem} ({self.action})"


class Report:
    """Collects :class:`Problem` records; raises on the first one when ``strict``."""

    def __init__(self, strict=False):
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, file, record, problem, action):
        item = Problem(str(file), str(record), problem, action)
        if self.strict:
            raise DataError(f"{item.file}" + (f" [{item.record}]" if item.record else "") + f": {problem}")
        self.problems.append(item)
        return item

    def __len__(self):
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def to_json(self):
        return [dataclasses.asdict(p) for p in self.problems]

    def summary(self):
        """One line per distinct (problem, action), with counts."""
        counts = {}
        for p in self.problems:
            counts[(p.problem, p.action)] = counts.get((p.problem, p.action), 0) + 1
        return [f"{n} x {problem} ({action})" for (problem, action), n in sorted(counts.items())]

    def __repr__(self):
        return f"Report(strict={self.strict}, problems={json.dumps(self.to_json())[:200]})"
