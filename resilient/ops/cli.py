"""The `resilient` command: a thin click layer over the library (it formats; the library decides)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

from ..api.client import Client
from ..api.registry import import_job_modules, lookup
from ..config import Settings, parse_size
from ..errors import ConfigError, ResilientError
from ..model import DEFAULT_THRESHOLDS
from . import report

if TYPE_CHECKING:
    from ..web.server import WebOptions


class Group(click.Group):
    """Every error becomes one line on stderr and exit code 1, never a traceback: ours (ResilientError) and
    click's (a bad option or a missing argument, which click would print as a usage block, exit code 2)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
            _fail(f"{exc.format_message().rstrip('.')}{where}")
        except click.ClickException as exc:
            _fail(exc.format_message())
        except click.Abort:
            _fail("aborted")
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResilientError as exc:
            _fail(str(exc))


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    return Settings.from_env(**ctx.obj, **overrides)


@click.group(cls=Group)
@click.option("--redis-url", envvar=["RESILIENT_REDIS_URL", "REDIS_URL"], default=None,
              help="Redis to use (default: the embedded server under --data-dir).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, envvar="RESILIENT_DATA_DIR",
              help="Where the embedded server keeps its data (default ./.resilient).")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, data_dir: Path | None) -> None:
    """Batch jobs on Redis that survive running out of memory."""
    ctx.obj = {"redis_url": redis_url, "data_dir": data_dir}


def client_of(ctx: click.Context) -> Client:
    return Client.from_settings(settings_of(ctx))


TOKEN_FILE_HELP = ("File whose first line is the token the dashboard's actions need (or set RESILIENT_WEB_TOKEN); "
                   "without one the dashboard is read-only.")


def web_options_of(host: str, port: int, token_file: Path | None) -> WebOptions:
    from ..config import web_token
    from ..web.server import WebOptions

    return WebOptions(host, port, web_token(token_file))


@main.command()
@click.argument("modules", nargs=-1, required=True)
@click.option("-q", "--queue", "queues", multiple=True, help="Queue to listen on (repeat); default: the "
              "queues of the jobs in MODULES.")
@click.option("--burst", is_flag=True, help="Drain the queues, then exit (as rq worker --burst).")
@click.option("--name", default=None, help="Worker name (default: random, as in rq).")
@click.option("--memory-limit", default=None, help="Memory limit, e.g. 300M (default: the cgroup's or RAM).")
@click.option("--soft", type=float, default=None,
              help=f"Soft line, fraction of the limit (default {DEFAULT_THRESHOLDS.soft:.2f}).")
@click.option("--hard", type=float, default=None,
              help=f"Hard line: checkpoint and step aside ({DEFAULT_THRESHOLDS.hard:.2f}).")
@click.option("--critical", type=float, default=None,
              help=f"Critical line: stop the horse ({DEFAULT_THRESHOLDS.critical:.2f}).")
@click.option("--psi-threshold", type=float, default=None,
              help=f"PSI some-avg10 % that counts as soft ({DEFAULT_THRESHOLDS.psi_some_avg10:g}).")
@click.option("--shutdown-grace", type=float, default=None, help="Seconds a job gets to checkpoint on SIGTERM.")
@click.option("--lease-ttl", type=float, default=None, help="Seconds a lost worker's job waits to be reaped (10).")
@click.option("--stall-timeout", type=float, default=None,
              help="Stop a job that makes no checkpoint for this many seconds (hung); default: never.")
@click.option("--jobs-per-process", type=int, default=None,
              help="Jobs one forked process runs before it is replaced (default 1: a fresh fork per job).")
@click.option("--recycle-at", type=float, default=None,
              help="With --jobs-per-process: replace the process when its RSS after a job is above this "
                   "fraction of the memory limit (0.5).")
@click.option("--reap", is_flag=True, help="Also reap expired leases (as `resilient supervisor` does).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True,
              help="auto: JSON unless on a terminal.")
@click.pass_context
def worker(ctx: click.Context, /, modules: tuple[str, ...], queues: tuple[str, ...], burst: bool,
           name: str | None, memory_limit: str | None, log_level: str, log_format: str, reap: bool,
           metrics_port: int | None, **tuning: Any) -> None:
    """Run a worker for the jobs defined in MODULES (e.g. `resilient worker myapp.jobs`)."""
    from ..runtime.runner import run_worker

    limit = parse_size(memory_limit) if memory_limit else None
    settings = settings_of(ctx, memory_limit=limit, **tuning)
    code = run_worker(list(modules), list(queues), settings, burst=burst, name=name, log_level=log_level,
                      reap=reap, log_format=log_format, metrics_port=metrics_port)
    sys.exit(code)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("worker_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--workers", type=int, default=0, show_default=True,
              help="Also run this many local workers (WORKER_ARGS: their modules and flags), restarting dead ones.")
@click.option("--lease-ttl", type=float, default=None, help="Seconds without renewal before a job is lost (10).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="Seconds between two reaps.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.option("--web-port", type=int, default=None, help="Also serve the web dashboard on this port.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Address the dashboard listens on.")
@click.option("--web-token-file", "token_file", type=click.Path(path_type=Path), default=None, help=TOKEN_FILE_HELP)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True)
@click.pass_context
def supervisor(ctx: click.Context, worker_args: tuple[str, ...], workers: int, lease_ttl: float | None,
               interval: float, log_level: str, log_format: str, metrics_port: int | None, web_port: int | None,
               web_host: str, token_file: Path | None) -> None:
    """Requeue the jobs of workers that died (expired leases); with --workers N, also run N workers:
    `resilient supervisor --workers 4 myapp.jobs --memory-limit 1G`."""
    from ..runtime.supervisor import run_supervisor
    from .logs import log_to_stderr

    if workers and not worker_args:
        raise ConfigError("--workers needs the job modules to run, e.g. `resilient supervisor --workers 2 myapp.jobs`")
    log_to_stderr(log_level, log_format)
    args = list(worker_args) + (["--lease-ttl", str(lease_ttl)] if lease_ttl else [])
    web = web_options_of(web_host, web_port, token_file) if web_port is not None else None
    sys.exit(run_supervisor(settings_of(ctx, lease_ttl=lease_ttl), interval, workers, args, metrics_port, web))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8321, show_default=True, help="Port to listen on.")
@click.option("--token-file", type=click.Path(path_type=Path), default=None, help=TOKEN_FILE_HELP)
@click.pass_context
def web(ctx: click.Context, host: str, port: int, token_file: Path | None) -> None:
    """Serve the web dashboard (read-only unless a token is given): `resilient web`, then open the URL."""
    from ..web.server import serve_forever

    options = web_options_of(host, port, token_file)
    serve_forever(client_of(ctx), options, lambda url: click.echo(
        f"dashboard on {url} ({'actions need the token' if options.token else 'read-only'}); Ctrl+C stops it"))


@main.command()
@click.option("--live", "mode", flag_value="live", help="This container's worker/supervisor is ticking (no Redis).")
@click.option("--ready", "mode", flag_value="ready", help="Redis answers and the local workers are registered.")
@click.option("--max-age", type=float, default=30.0, show_default=True, help="Seconds since the last tick.")
@click.pass_context
def health(ctx: click.Context, mode: str | None, max_age: float) -> None:
    """Container probes: exit 0 when healthy, 1 (with one line saying why) when not."""
    from .health import check_live, check_ready

    if mode is None:
        raise ConfigError("say which probe: `resilient health --live` or `resilient health --ready`")
    ok, message = check_live(max_age) if mode == "live" else check_ready(settings_of(ctx), max_age)
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


@main.group()
def server() -> None:
    """The embedded Redis-protocol server under --data-dir."""


@server.command("start")
@click.pass_context
def server_start(ctx: click.Context) -> None:
    from ..storage.connection import mask_password
    from ..storage.server import ensure_server

    info = ensure_server(settings_of(ctx).data_dir)
    click.echo(f"running: {mask_password(info.url)} (pid {info.pid}, {info.binary}, data in {info.data_dir})")


@server.command("stop")
@click.pass_context
def server_stop(ctx: click.Context) -> None:
    from ..storage.server import stop_server

    stopped = stop_server(settings_of(ctx).data_dir)
    click.echo("stopped" if stopped else "not running")


@server.command("status")
@click.pass_context
def server_status_cmd(ctx: click.Context) -> None:
    from ..storage.connection import mask_password
    from ..storage.server import server_status

    info = server_status(settings_of(ctx).data_dir)
    click.echo(f"running: {mask_password(info.url)} (pid {info.pid})" if info else "not running")
    sys.exit(0 if info else 3)


@main.command()
@click.argument("name")
@click.argument("args_json", default="[]")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--wait", "wait_s", type=float, default=None, help="Wait up to this many seconds for the result.")
@click.pass_context
def enqueue(ctx: click.Context, name: str, args_json: str, kwargs_json: str, wait_s: float | None) -> None:
    """Queue a registered job by name, e.g. `resilient enqueue examples.squares.sum_squares '[1000]'`."""
    spec = _spec_by_name(name)
    args, kwargs = _json_arg("ARGS_JSON", args_json, list), _json_arg("--kwargs", kwargs_json, dict)
    handle = client_of(ctx).enqueue(spec, tuple(args), kwargs)
    click.echo(handle.id)
    if wait_s is not None:
        click.echo(json.dumps(handle.result(timeout=wait_s)))


def _spec_by_name(name: str) -> Any:
    module = name.rpartition(".")[0]
    if module:
        import_job_modules([module])
    return lookup(name)


def _json_arg(label: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label} is not valid JSON ({exc.msg}); e.g. '[1, \"a\"]'") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{label} must be a JSON {'array' if kind is list else 'object'}")
    return value


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Queues, workers and running jobs with their progress."""
    client = client_of(ctx)
    if as_json:
        click.echo(json.dumps(report.status(client.connection, client.store), indent=2))
        return
    from .views import STATUS_RUNNING_ROWS, print_status

    print_status(report.status(client.connection, client.store, running_limit=STATUS_RUNNING_ROWS))


@main.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=int, default=None, help="Stop after this many refreshes (default: until Ctrl+C).")
@click.pass_context
def top(ctx: click.Context, interval: float, count: int | None) -> None:
    """A live view: queues, workers' memory against their limits, running jobs, last deaths."""
    from .top import run_top

    run_top(client_of(ctx), interval, count)


@main.command("inspect")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", is_flag=True, help="Chart RSS over time against the limit, deaths marked.")
@click.pass_context
def inspect_cmd(ctx: click.Context, job_id: str, as_json: bool, plot: bool) -> None:
    """A job's attempts, deaths (with evidence) and checkpoints (JOB_ID: the id, or its start as `top` shows it)."""
    from .admin import full_job_id

    client = client_of(ctx)
    job_id = full_job_id(client, job_id)
    data = report.inspect(client.store, job_id)
    if not data:
        raise click.ClickException(f"no job {job_id}; `resilient status` lists running jobs")
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from .views import print_inspect

    print_inspect(data, plot)


@main.command()
@click.argument("job_id")
@click.option("--attempts", type=click.IntRange(min=1), default=10, show_default=True,
              help="Attempts it gets from now on.")
@click.option("--restart", is_flag=True, help="Start from the beginning (drop the checkpoint, e.g. a corrupt one).")
@click.pass_context
def requeue(ctx: click.Context, job_id: str, attempts: int, restart: bool) -> None:
    """Give a parked or failed job another go, from its last checkpoint (or from scratch)."""
    from .admin import full_job_id, requeue_job

    client = client_of(ctx)
    click.echo(requeue_job(client, full_job_id(client, job_id), attempts, restart))


@main.command()
@click.pass_context
def parked(ctx: click.Context) -> None:
    """Jobs that stopped being retried, with the reason."""
    store = client_of(ctx).store
    entries = store.parked()
    if not entries:
        click.echo("no parked jobs")
    for job_id, at_ms in entries:
        reason = store.job_fields(job_id).get("parked_reason", "")
        click.echo(f"{job_id}  {datetime.fromtimestamp(at_ms / 1000):%Y-%m-%d %H:%M:%S}  {reason}")


@main.command()
@click.option("--items", default=60, show_default=True, help="Items in the demo job.")
@click.pass_context
def demo(ctx: click.Context, items: int) -> None:
    """Start the embedded server and a worker, kill the job mid-run, watch it resume."""
    from .demo import run_demo

    sys.exit(run_demo(settings_of(ctx), items))


if __name__ == "__main__":  # pragma: no cover
    main()
