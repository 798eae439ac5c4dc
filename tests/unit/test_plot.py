"""inspect --plot as text: what a person sees for a job's memory."""

from __future__ import annotations

from resilient.ops.plot import render

MiB = 1024 * 1024


def test_deaths_are_drawn_even_when_no_sample_was_taken():
    """Attempts shorter than the one-second sampling leave no sample: each death's peak RSS is still drawn,
    with its mark, instead of "no memory samples"."""
    deaths = [{"at": 1000, "cause": "oom:self", "evidence": {"rss": 290 * MiB}},
              {"at": 3000, "cause": "oom:self", "evidence": {"rss": 295 * MiB}}]
    lines = render([], 300 * MiB, 0.7, 0.85, deaths)
    assert "\n".join(lines).count("▲") == 2
    marks = next(line for line in lines if line.strip().startswith("deaths"))
    assert marks.count("K") == 2
    assert render([], 300 * MiB, 0.7, 0.85, []) == ["(no memory samples recorded for this job)"]
