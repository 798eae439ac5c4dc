"""The effect log: every side effect a job performed in a kit run, across its attempts, in order.

Two things write to it: ctx.once when it runs its function (not when it returns a recorded result), and
record_effect(), which a test's stand-in for a side effect (a fake mailer, say) calls. assert_resumable
compares how often each effect ran in an interrupted run with the uninterrupted one. An effect is named by
its ctx.once key (an argument's repr may hold a memory address that changes between attempts), or by what
record_effect was given.
"""

from __future__ import annotations

import reprlib
from collections import Counter
from contextvars import ContextVar
from typing import Any, Callable

_current: ContextVar[list[str] | None] = ContextVar("resilient_testing_effects", default=None)
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 8, 8


def record_effect(name: str, *args: Any, **kwargs: Any) -> None:
    """Note that a side effect happened, for the kit run in progress (a no-op outside one): call it from the
    stand-in a test gives the job for anything that must not happen twice (`record_effect("mail", user)`)."""
    log = _current.get()
    if log is not None:
        log.append(describe(name, args, kwargs))


def describe(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """`name(arg, key=value)`, each value shortened: how an effect is named in the log and in failures."""
    parts = [_short.repr(arg) for arg in args] + [f"{key}={_short.repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


class EffectLog:
    """The effects of one run; `collecting()` routes record_effect() here while the job runs."""

    def __init__(self, performed: list[str] | None = None, calls: dict[str, str] | None = None) -> None:
        self.performed: list[str] = performed if performed is not None else []
        self.calls: dict[str, str] = calls if calls is not None else {}  # a ctx.once effect -> its call, shown

    def collect(self) -> Any:
        """Route record_effect() here; returns the token for `stop`."""
        return _current.set(self.performed)

    @staticmethod
    def stop(token: Any) -> None:
        _current.reset(token)

    @staticmethod
    def pause() -> None:
        """The job was killed: what its `finally` blocks do never happened (`stop` ends the pause)."""
        _current.set(None)

    def once_ran(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        effect = f"ctx.once({key!r})"
        self.performed.append(effect)
        self.calls[effect] = describe(name_of(fn), args, kwargs)

    def differences(self, reference: list[str]) -> list[str]:
        """One line per effect that ran more or less often than in `reference` (the uninterrupted run)."""
        wanted, got = Counter(reference), Counter(self.performed)
        lines = []
        for effect in dict.fromkeys([*self.performed, *reference]):
            if got[effect] == wanted[effect]:
                continue
            call = f" ({self.calls[effect]})" if effect in self.calls else ""
            verdict = "repeated after a resume" if got[effect] > wanted[effect] else "lost by a resume"
            lines.append(f"effect {effect}{call} ran {_times(got[effect])} ({wanted[effect]} uninterrupted): {verdict}")
        return lines


def _times(count: int) -> str:
    return "1 time" if count == 1 else f"{count} times"
