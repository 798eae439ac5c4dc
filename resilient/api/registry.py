"""@resilient.job: the decorator, the spec it makes, and the allowlist of runnable functions."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..config import parse_duration, parse_size
from ..errors import ConfigError, UnknownJob
from ..model import JobOptions

if TYPE_CHECKING:
    from .client import Client
    from .handle import JobHandle

_REGISTRY: dict[str, "JobSpec"] = {}


class JobSpec:
    """A registered job function. Call it to run it inline; .enqueue() to run it on a worker."""

    def __init__(self, fn: Callable[..., Any], options: JobOptions) -> None:
        self.fn = fn
        self.options = options
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn
        self._signature: inspect.Signature | None = None  # read on first enqueue, not at import

    def __call__(self, ctx: Any, *args: Any, **kwargs: Any) -> Any:
        return self.fn(ctx, *args, **kwargs)

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """ConfigError when the function could not be called with these arguments (after its ctx): a wrong
        call is refused at enqueue, not found out on a worker."""
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        try:
            self._signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{self.name} cannot be called with these arguments: {exc}") from None

    def enqueue(self, *args: Any, **kwargs: Any) -> "JobHandle":
        """Queue a run with these arguments on the default client (REDIS_URL, else the embedded server)."""
        return self.enqueue_call(args=args, kwargs=kwargs)

    def enqueue_call(
        self,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        client: "Client | None" = None,
        job_id: str | None = None,
    ) -> "JobHandle":
        """Like enqueue(), with a chosen client or job id."""
        from .client import default_client

        return (client or default_client()).enqueue(self, args, kwargs or {}, job_id=job_id)

    def enqueue_many(self, calls: Iterable[tuple[Any, ...] | dict[str, Any]], *,
                     client: "Client | None" = None) -> list["JobHandle"]:
        """Queue one run per call (a tuple of positional arguments, or a dict of keyword arguments), in one
        round trip: `fn.enqueue_many([(1,), (2,)])`."""
        from .client import default_client

        return (client or default_client()).enqueue_many(self, calls)

    def __repr__(self) -> str:
        return f"<resilient.job {self.name} queue={self.options.queue!r}>"


def job(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register a batch function as a resilient job: `@resilient.job` or `@resilient.job(queue=...)`."""

    if isinstance(options.get("memory"), str):
        options["memory"] = parse_size(options["memory"])
    if isinstance(options.get("keep"), str):
        options["keep"] = parse_duration(options["keep"])

    def register(func: Callable[..., Any]) -> JobSpec:
        spec = JobSpec(func, JobOptions(**options))
        if spec.name.startswith("__main__."):
            raise ConfigError(
                f"{spec.name}: define jobs in an importable module (workers import it by name), not in __main__"
            )
        _REGISTRY[spec.name] = spec
        return spec

    return register(fn) if fn is not None else register


def lookup(name: str) -> JobSpec:
    """The spec registered under `name`; UnknownJob for anything else (nothing is imported by name)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownJob(str(name)) from None


def registered() -> list[str]:
    return sorted(_REGISTRY)


def import_job_modules(modules: list[str]) -> list[str]:
    """Import the modules a worker was told about, registering their jobs; returns the job names."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import job module {module!r}: {exc}") from None
    return registered()
