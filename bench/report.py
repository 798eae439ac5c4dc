"""The table rows, the aims, and how they are printed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    """One line of the table; `ratio` is resilient ÷ rq where both are numbers, else empty."""

    scenario: str
    resilient: str
    rq: str
    ratio: str = ""


@dataclass(frozen=True)
class Aim:
    """A figure the benchmark aims for: met True/False, or None when it could not be measured."""

    scenario: str
    aim: str
    figure: str
    met: bool | None
    why: str = ""


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    aims: list[Aim] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "aims": [asdict(a) for a in self.aims],
                "notes": self.notes, "raw": self.raw}


def ratio(resilient: float, rq: float) -> str:
    return f"{resilient / rq:.2f}×" if rq else ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(rows: list[Row]) -> str:
    """A Markdown table: it reads as plain text in a terminal and pastes into the README as is."""
    header = Row("scenario", "resilient", "rq", "ratio")
    fields = ("scenario", "resilient", "rq", "ratio")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in fields]

    def line(r: Row) -> str:
        cells = (r.scenario, r.resilient, r.rq, r.ratio)
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def aims_text(aims: list[Aim]) -> str:
    out = []
    for a in aims:
        mark = {True: "met", False: "MISSED", None: "not measured"}[a.met]
        why = f" ({a.why})" if a.why else ""
        out.append(f"- [{mark}] {a.scenario}: {a.aim}: {a.figure}{why}")
    return "\n".join(out)
