"""A terminal chart of a job's RSS over time against its limit and thresholds, deaths marked."""

from __future__ import annotations

from typing import Any

from ..config import format_size
from ..runtime.deaths import peak_rss

WIDTH, HEIGHT = 64, 12
MARKS = {"preempted": "P", "oom": "K", "killed": "X", "lost": "L", "crashed": "C"}


def death_mark(cause: str) -> str:
    return next((mark for prefix, mark in MARKS.items() if cause.startswith(prefix)), "X")


def render(samples: list[dict[str, Any]], limit: int, soft: float, hard: float,
           deaths: list[dict[str, Any]]) -> list[str]:
    """Rows of text: y = RSS (0 .. a bit above L), x = time; '•' samples, '▲' peak RSS at each death,
    L/hard/soft lines, death marks below."""
    if not samples and not any(peak_rss(d.get("evidence") or {}) for d in deaths):
        return ["(no memory samples recorded for this job)"]
    # attempts shorter than the sampling second leave no sample; their deaths' peaks are still drawn
    times = [s["at"] for s in samples] + [int(d["at"]) for d in deaths]
    start, end = min(times), max(times)
    span = max(1, end - start)
    top = max([limit] + [s["rss"] for s in samples] + [peak_rss(d.get("evidence") or {}) for d in deaths]) * 1.05

    def column(at: int) -> int:
        return min(WIDTH - 1, int((at - start) / span * (WIDTH - 1)))

    def row(value: float) -> int:
        return min(HEIGHT - 1, int(value / top * (HEIGHT - 1)))

    grid = [[" "] * WIDTH for _ in range(HEIGHT)]
    for value, char in ((soft * limit, "·"), (hard * limit, "-"), (limit, "=")):
        grid[row(value)] = [char] * WIDTH
    for sample in samples:
        grid[row(sample["rss"])][column(sample["at"])] = "•"
    marks = [" "] * WIDTH
    for death in deaths:
        marks[column(int(death["at"]))] = death_mark(death["cause"])
        peak = peak_rss(death.get("evidence") or {})
        if peak:  # the kernel's ru_maxrss catches what one-second samples miss
            grid[row(peak)][column(int(death["at"]))] = "▲"
    labels = {row(limit): f"L {format_size(limit)}", row(hard * limit): f"hard {hard:.0%}",
              row(soft * limit): f"soft {soft:.0%}"}
    lines = [f"{format_size(int(top * (r + 1) / HEIGHT)):>10} |{''.join(grid[r])}| {labels.get(r, '')}"
             for r in reversed(range(HEIGHT))]
    lines.append(f"{'':>10} +{'-' * WIDTH}+")
    lines.append(f"{'deaths':>10}  {''.join(marks)}")
    lines.append(f"{'':>10}  0 s{'':>{WIDTH - 12}}{span / 1000:.1f} s")
    legend = ", ".join(f"{death_mark(d['cause'])} {d['cause']}" for d in deaths)
    if legend:
        lines.append(f"{'':>10}  {legend}")
    return lines
