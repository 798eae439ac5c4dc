"""The dashboard's HTTP server: pages (one static shell, drawn by app.js), JSON under /api/, and operator
actions that need a token. Standard library only (http.server); one thread per request."""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from ..api.client import Client
from ..errors import ConfigError, NoSuchJob, ResilientError
from ..ops.admin import cancel_job, requeue_job
from . import data

log = logging.getLogger("resilient.web")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8321
TOKEN_HEADER = "X-Resilient-Token"
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
PAGES = re.compile(r"^/(|job/[^/]+|parked|worker/[^/]+)$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class WebOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None  # None: read-only, every action refused


class Refused(Exception):
    """A request the dashboard turns down, with the HTTP status and the one line that says why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


Reader = Callable[[Client, str, dict[str, list[str]]], dict[str, Any]]
READS: list[tuple[re.Pattern[str], Reader]] = [
    (re.compile(r"^/api/status$"),
     lambda c, _, q: data.overview(c, None if q.get("all") == ["1"] else data.OVERVIEW_RUNNING)),
    (re.compile(r"^/api/held$"), lambda c, _, q: data.held(c)),
    (re.compile(r"^/api/jobs/([^/]+)$"), lambda c, job_id, q: data.job(c, job_id)),
    (re.compile(r"^/api/workers/([^/]+)$"), lambda c, name, q: data.worker(c, name)),
]
ACTIONS: dict[str, Callable[[Client, str], str]] = {
    "requeue": lambda c, job_id: requeue_job(c, job_id),
    "restart": lambda c, job_id: requeue_job(c, job_id, restart=True),
    "cancel": cancel_job,
}
ACTION_PATH = re.compile(r"^/api/jobs/([^/]+)/(" + "|".join(ACTIONS) + ")$")


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, client: Client, options: WebOptions) -> None:
        self.client = client
        self.token = options.token
        self.loopback = options.host in LOOPBACK_HOSTS
        self.address_family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        super().__init__((options.host, options.port), Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: Dashboard
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 16))  # no body is used
        self._answer(self._post)

    def _answer(self, route: Callable[[str, dict[str, list[str]]], tuple[str, bytes]]) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        try:
            self._check_host()
            kind, body = route(url.path, parse_qs(url.query))
            status = HTTPStatus.OK
        except Refused as exc:
            status, kind, body = exc.status, "application/json", _json({"error": str(exc)})
        except NoSuchJob as exc:
            status, kind, body = HTTPStatus.NOT_FOUND, "application/json", _json({"error": str(exc)})
        except ResilientError as exc:
            status, kind, body = HTTPStatus.CONFLICT, "application/json", _json({"error": str(exc)})
        except redis.RedisError as exc:
            status, kind, body = HTTPStatus.SERVICE_UNAVAILABLE, "application/json", _json({"error": f"Redis: {exc}"})
        except Exception as exc:  # a bug here must not cut the connection without a word
            log.exception("web: %s %s", self.command, self.path)
            status, kind, body = HTTPStatus.INTERNAL_SERVER_ERROR, "application/json", _json({"error": repr(exc)})
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
        self.end_headers()
        self.wfile.write(body)

    def _check_host(self) -> None:
        """Bound to loopback, answer only requests addressed to it: a page elsewhere that rebinds its own
        name to 127.0.0.1 (DNS rebinding) must not read the dashboard."""
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if self.server.loopback and host not in LOOPBACK_HOSTS:
            raise Refused(HTTPStatus.FORBIDDEN, f"this dashboard answers on 127.0.0.1 only, not as {host!r}")

    def _get(self, path: str, query: dict[str, list[str]]) -> tuple[str, bytes]:
        if PAGES.match(path):
            return ASSETS["index.html"], _asset("index.html")
        if path.startswith("/assets/") and path.removeprefix("/assets/") in ASSETS:
            name = path.removeprefix("/assets/")
            return ASSETS[name], _asset(name)
        if path == "/api/config":
            return "application/json", _json({"actions": self.server.token is not None})
        for pattern, read in READS:
            match = pattern.match(path)
            if match:
                found = read(self.server.client, unquote(match.group(1)) if match.groups() else "", query)
                if not found:
                    raise Refused(HTTPStatus.NOT_FOUND, f"nothing at {path}; the overview lists what exists")
                return "application/json", _json(found)
        raise Refused(HTTPStatus.NOT_FOUND, f"no page {path}")

    def _post(self, path: str, query: dict[str, list[str]]) -> tuple[str, bytes]:
        match = ACTION_PATH.match(path)
        if not match:
            raise Refused(HTTPStatus.NOT_FOUND, f"no action {path}")
        self._authorize()
        job_id, action = unquote(match.group(1)), match.group(2)
        message = ACTIONS[action](self.server.client, job_id)
        log.info("web: %s %s: %s", action, job_id, message)
        return "application/json", _json({"message": message})

    def _authorize(self) -> None:
        """Actions need the token, in X-Resilient-Token or as `Authorization: Bearer <token>`."""
        if self.server.token is None:
            raise Refused(HTTPStatus.FORBIDDEN, "this dashboard is read-only: start it with RESILIENT_WEB_TOKEN "
                                                "or --token-file to allow actions")
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        given = self.headers.get(TOKEN_HEADER) or bearer
        if not given or not hmac.compare_digest(given.encode(), self.server.token.encode()):
            raise Refused(HTTPStatus.FORBIDDEN, "refused: this action needs the dashboard's token "
                                                f"({TOKEN_HEADER} header); enter it once on the page")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: " + format, *args)


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()


def _asset(name: str) -> bytes:
    return files("resilient.web").joinpath("assets", name).read_bytes()


def _bind(client: Client, options: WebOptions) -> Dashboard:
    try:
        return Dashboard(client, options)
    except OSError as exc:
        raise ConfigError(f"the dashboard cannot listen on {options.host}:{options.port} ({exc.strerror}); "
                          "pick another port or host") from None


def serve_forever(client: Client, options: WebOptions, announce: Callable[[str], None]) -> None:
    """`resilient web`: serve until Ctrl+C."""
    dashboard = _bind(client, options)
    announce(dashboard.url)
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.server_close()


def serve_in_thread(client: Client, options: WebOptions) -> Dashboard:
    """Start the dashboard on a thread of this process (port 0: any free port); `.stop()` ends it."""
    dashboard = _bind(client, options)
    threading.Thread(target=dashboard.serve_forever, name="web", daemon=True).start()
    return dashboard


def start_for(connection: redis.Redis, settings: Any, options: WebOptions) -> Callable[[], None]:
    """What `supervisor --web-port` runs alongside its reaper: returns the function that stops it."""
    dashboard = serve_in_thread(Client(connection, settings), options)
    log.info("dashboard on %s (%s)", dashboard.url, "actions need the token" if options.token else "read-only")
    return dashboard.stop
