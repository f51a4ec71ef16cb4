"""The HTTP API server: tornado on the master's loop, every route a call of the service layer.

One response shape for every answer: the result as JSON on success, ``{"error": {"code", "message"}}``
otherwise, with the status the service error's code maps to (master/service/errors.py HTTP_STATUS),
401 without a valid token, 403 naming the scope (or the agents) the token lacks, 404 for an unknown
path, 405 for a known path with another method, 400 for a body that is not JSON or not the request
type, 413 for a body over the bound. Never a traceback: a bug is logged and answered 500.
Every call is logged with its token's name, method, path, status and time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import msgspec
import tornado.httpserver
import tornado.web

from saltmarsh.protocol.targeting import make_target

from ..errors import CommandError
from ..service.errors import HTTP_STATUS, Invalid, Refused, ServiceError
from ..service.registry import OPERATIONS, ServiceContext, load_all
from ..service.types.vms import MigrateAbortRequest
from .base import ApiError, JsonHandler, authorize
from .confine import confine, confine_agent, confine_vm, query_value
from .events import EventRing
from .metrics import Metrics
from .operations import Operations
from .routes import OPERATION_ROUTES, ROUTES, WAIT_ROUTE, Route
from .settings import HttpSettings
from .stream import EventsHandler
from .tokens import ApiToken, ApiTokens

if TYPE_CHECKING:
    from ..server import Master

log = logging.getLogger(__name__)

# How long /v1/jobs/<jid>/wait waits at most, whatever ?timeout= asks.
MAX_WAIT_SECONDS = 300.0


class OpenApiHandler(JsonHandler):
    """``GET /v1/openapi.json``: the API's description, public (it holds no secret)."""

    def get(self) -> None:
        """The document, generated once per master."""
        self.answer(200, _openapi())


@functools.cache
def _openapi() -> dict[str, Any]:
    from .openapi import document

    return document()


class MetricsHandler(JsonHandler):
    """``GET /metrics``: Prometheus's text format, for a token with ``metrics:read``."""

    def initialize(self, tokens: ApiTokens, metrics: Metrics) -> None:
        """Given by the application."""
        self.tokens, self.metrics = tokens, metrics

    def get(self) -> None:
        """The metrics, or the one error shape."""
        try:
            self.token_name = authorize(self, self.tokens, "metrics:read").name
        except ApiError as exc:
            self.fail(exc.status, exc.code, exc.message)
            return
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.metrics.render())

    def on_finish(self) -> None:
        """The access log line."""
        log.info("http: GET /metrics %d token=%s", self.get_status(), self.token_name)


class NotFoundHandler(JsonHandler):
    """Any path no route has."""

    def prepare(self) -> None:
        """404 for every method."""
        self.fail(404, "not_found", f"no such endpoint: {self.request.method} {self.request.path}")


@tornado.web.stream_request_body
class OperationHandler(JsonHandler):
    """One or more routes on one path: authenticate, check the scope, build the typed request, call, answer.

    The body is streamed in, so that one over the bound is answered 413 in the one shape from its
    head alone (Content-Length) or as soon as it grows past the bound (chunked), never read whole.
    """

    def initialize(self, master: Master, tokens: ApiTokens, routes: dict[str, Route], max_body: int,
                   operations: Operations) -> None:
        """Given by the application for this path."""
        self.master, self.tokens, self.routes, self.max_body = master, tokens, routes, max_body
        self.operations = operations
        self.body = bytearray()

    def prepare(self) -> None:
        """Refuse a declared body over the bound before any of it is read."""
        declared = self.request.headers.get("Content-Length", "0")
        if not declared.isdigit() or int(declared) > self.max_body:
            self._too_large()

    def data_received(self, chunk: bytes) -> None:
        """Collect the body, up to the bound."""
        if self._finished:
            return
        self.body += chunk
        if len(self.body) > self.max_body:
            self._too_large()

    def _too_large(self) -> None:
        log.warning("http: %s %s refused: the body is over %d bytes", self.request.method, self.request.path,
                    self.max_body)
        self.set_header("Connection", "close")
        self.fail(413, "too_large", f"the request body is over the {self.max_body} bytes the API takes")

    async def get(self, *params: str) -> None:
        """GET routes."""
        await self._serve(params)

    async def post(self, *params: str) -> None:
        """POST routes."""
        await self._serve(params)

    async def delete(self, *params: str) -> None:
        """DELETE routes."""
        await self._serve(params)

    async def _serve(self, params: tuple[str, ...]) -> None:
        route = self.routes.get(self.request.method or "")
        if route is None:
            self.fail(405, "method_not_allowed", f"{self.request.path} takes {', '.join(sorted(self.routes))}")
            return
        try:
            token = self._authorize(route)
            fields = self._fields(route, params)
            if route.targets:
                confine(self.master, token, fields)
            if route.agent:
                confine_agent(token, fields.get(route.agent))
            if route.vm or route.command == "virt.init":
                confine_vm(self.master, token, fields, creating=route.command == "virt.init")
            result = await (self._start(route, fields, token) if route.operation else self._call(route, fields))
        except ApiError as exc:
            self.fail(exc.status, exc.code, exc.message)
            return
        except ServiceError as exc:
            self.fail(HTTP_STATUS[exc.code], exc.code, str(exc))
            return
        except CommandError as exc:  # a component not yet typed: a refusal (service/errors.py)
            self.fail(HTTP_STATUS[Refused.code], Refused.code, str(exc))
            return
        self.answer(route.status, result)

    def _authorize(self, route: Route) -> ApiToken:
        token = authorize(self, self.tokens, route.scope)
        self.token_name = token.name
        return token

    def _fields(self, route: Route, params: tuple[str, ...]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if route.body and self.body:
            try:
                body = json.loads(bytes(self.body))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ApiError(400, Invalid.code, f"the body is not JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise ApiError(400, Invalid.code, "the body must be a JSON object")
            fields.update(body)
        for name, values in self.request.query_arguments.items():
            try:
                text = values[-1].decode()
            except UnicodeDecodeError as exc:
                raise ApiError(400, Invalid.code, f"query parameter {name!r} is not UTF-8") from exc
            fields[name] = query_value(text)
        fields.update(zip(route.params, params, strict=True))
        if route.targets and isinstance(fields.get("target"), str):  # agents; virt.migrate's is a host
            try:
                fields["target"] = make_target(fields["target"])
            except ValueError as exc:
                raise ApiError(400, Invalid.code, f"bad target: {exc}") from exc
        return fields

    def _request(self, route: Route, fields: dict[str, Any]) -> Any:
        try:
            return msgspec.convert(fields, OPERATIONS[route.command].request, from_attributes=True)
        except msgspec.ValidationError as exc:
            raise ApiError(400, Invalid.code, f"invalid request: {exc}") from exc

    async def _start(self, route: Route, fields: dict[str, Any], token: ApiToken) -> Any:
        """Start the route's call as an operation: its view, at once."""
        request = self._request(route, fields)
        ctx = ServiceContext(self.master)
        cancel = None
        if route.command == "virt.migrate":
            abort = MigrateAbortRequest(name=request.name)

            async def cancel() -> Any:
                return await OPERATIONS[abort.command].run(ctx, abort)
        operation = self.operations.start(route.command, token.name, OPERATIONS[route.command].run(ctx, request),
                                          cancel)
        return {"operation": operation.view()}

    async def _call(self, route: Route, fields: dict[str, Any]) -> Any:
        if route.command == "run":
            fields["wait"] = False  # the API starts the job; its returns are at /v1/jobs/<jid>
        return await OPERATIONS[route.command].run(ServiceContext(self.master), self._request(route, fields))

    def on_finish(self) -> None:
        """The access log line, with the token's name (never the token)."""
        log.info("http: %s %s %d token=%s %.1f ms", self.request.method, self.request.path, self.get_status(),
                 self.token_name, 1000 * self.request.request_time())


class OperationsHandler(OperationHandler):
    """``/v1/operations/<id>`` (GET, DELETE) and ``…/wait``: seen by the token that started the operation."""

    async def _call(self, route: Route, fields: dict[str, Any]) -> Any:
        op_id, owner = str(fields["id"]), self.token_name
        if route.command == "operation.cancel":
            return await self.operations.cancel(op_id, owner)
        if route.command == "operation.wait":
            return await self.operations.wait(op_id, owner, wait_seconds(fields))
        return self.operations.get(op_id, owner).view()


def wait_seconds(fields: dict[str, Any]) -> float:
    """A ``…/wait`` request's ``timeout`` (default 30 s), within 0 and MAX_WAIT_SECONDS."""
    try:
        return max(min(float(fields.get("timeout", 30.0)), MAX_WAIT_SECONDS), 0.0)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, Invalid.code, "timeout must be a number of seconds") from exc


class WaitHandler(OperationHandler):
    """``GET /v1/jobs/<jid>/wait?timeout=S``: the job's outcome once it is complete or S passed."""

    async def _call(self, route: Route, fields: dict[str, Any]) -> Any:
        timeout = wait_seconds(fields)
        jid = fields["jid"]
        changed = asyncio.Event()
        handle = self.master.bus.subscribe(f"saltmarsh/job/{jid}/ret/", lambda _event: changed.set())
        try:
            deadline = time.monotonic() + timeout
            while True:
                outcome = await super()._call(route, {"jid": jid})
                left = deadline - time.monotonic()
                if outcome.complete or left <= 0:
                    return outcome
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self.master.bus.unsubscribe(handle)


def application(master: Master, max_body: int, ring: EventRing, backlog: int,
                metrics: Metrics, operations: Operations) -> tornado.web.Application:
    """The API's routes, each path's methods handled by one handler."""
    load_all()
    by_path: dict[str, dict[str, Route]] = {}
    for route in ROUTES:
        by_path.setdefault(route.path, {})[route.method] = route
    common = {"master": master, "tokens": master.api_tokens, "max_body": max_body, "operations": operations}
    handlers: list[Any] = [(r"/v1/openapi.json", OpenApiHandler),
                           (r"/metrics", MetricsHandler, {"tokens": master.api_tokens, "metrics": metrics}),
                           (r"/v1/events", EventsHandler,
                            {"tokens": master.api_tokens, "ring": ring, "backlog": backlog}),
                           (WAIT_ROUTE.path, WaitHandler, {**common, "routes": {"GET": WAIT_ROUTE}})]
    operation_paths: dict[str, dict[str, Route]] = {}
    for route in OPERATION_ROUTES:
        operation_paths.setdefault(route.path, {})[route.method] = route
    for path in sorted(operation_paths, key=len, reverse=True):  # …/wait before …/<id>
        handlers.append((path, OperationsHandler, {**common, "routes": operation_paths[path]}))
    # Longer, literal paths first: /v1/jobs/running before /v1/jobs/<jid>.
    for path in sorted(by_path, key=lambda p: (p.count("("), -len(p))):
        handlers.append((path, OperationHandler, {**common, "routes": by_path[path]}))
    return tornado.web.Application(handlers, default_handler_class=NotFoundHandler,
                                   log_function=lambda handler: None)  # on_finish logs, with the token


async def start_api(master: Master, settings: HttpSettings) -> HttpApi:
    """The API, listening; its certificate (when TLS is on) made or loaded off the loop."""
    ssl_options = None
    if settings.tls is not None:
        from .tls import server_context

        ssl_options = await asyncio.to_thread(server_context, settings, master.certificates.ca,
                                              master.config.root_dir / "pki" / "http")
    api = HttpApi(master, settings, ssl_options)
    api.start()
    return api


class HttpApi:
    """The listening server; ``start`` on the master's loop, ``stop`` at shutdown."""

    def __init__(self, master: Master, settings: HttpSettings, ssl_options: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self.ring = EventRing(master.bus, settings.event_ring_seconds, settings.event_ring_events)
        self.metrics = Metrics(master)
        self.operations = Operations()
        self._server = tornado.httpserver.HTTPServer(
            # The server's own bound is a backstop: the handlers answer 413 past max_body_bytes themselves.
            application(master, settings.max_body_bytes, self.ring, settings.event_backlog, self.metrics,
                        self.operations),
            max_body_size=settings.max_body_bytes * 2,
            idle_connection_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
            decompress_request=False, ssl_options=ssl_options)

    def start(self) -> None:
        """Listen (on the running loop)."""
        self._server.listen(self._settings.port, self._settings.host)
        log.info("HTTP API on %s", self._settings.url)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        self._server.stop()
        self.ring.close()
        self.metrics.close()
        await self._server.close_all_connections()
