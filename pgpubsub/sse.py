"""Browser push: channels' events as a server-sent event stream (``EventStreamView``).

::

    # urls.py
    from pgpubsub.sse import EventStreamView

    urlpatterns = [
        path("live/authors/", EventStreamView.as_view(channels=[AuthorChannel], fields=["name"])),
    ]

    // the page
    const source = new EventSource("/live/authors/?last_event_id=" + checkpoint);
    source.addEventListener("library.channels.AuthorChannel", (e) => apply(JSON.parse(e.data)));
    source.addEventListener("reset", () => reloadEverything());

Each event goes out as ``id:`` (the event id, a resumable position),
``event:`` (the channel's dotted path) and ``data:`` (JSON, see
:mod:`pgpubsub.eventjson`). The view is an async view over
:func:`pgpubsub.subscribe`, served by an ASGI server: a client costs a
coroutine and a bounded queue, not a thread, and each event is encoded once
per process, whatever the number of clients. The protocol, resume, scopes
and deployment are described in the "Live updates in the browser" page of
the documentation.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import django
import msgspec
from asgiref.sync import sync_to_async
from django.db import connections, models
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views import View

from .channel import BaseChannel, TriggerChannel
from .eventjson import FieldsSpec, Format, Variant, formats
from .exceptions import (
    CheckpointExpired,
    EventsMayBeMissed,
    InvalidCheckpoint,
    ScopeError,
    StreamConfigurationError,
    SubscriberTooSlow,
    SubscriptionEnded,
    SubscriptionError,
)
from .hub import Event, Subscriber, Subscription
from .scope import RowScope, ScopeSpec, judge_for

logger = logging.getLogger("pgpubsub")

#: Encoded messages kept per view (one per event and variant), shared by its clients.
MESSAGE_CACHE_SIZE = 4096

#: The event name of the message that tells a page to reload its data.
RESET_EVENT = "reset"

_encode = msgspec.json.Encoder().encode

#: A scope as the stream uses it: a compiled queryset, a predicate, or None (everything).
Scope = RowScope | Callable[[Any], bool] | None


class StreamSettings:
    """One view's configuration, checked when the view is built; shared by its requests."""

    def __init__(
        self,
        channels: Sequence[type[BaseChannel] | str],
        fields: FieldsSpec,
        heartbeat: float,
        retry: float,
        max_queue: int,
        batch_size: int,
        using: str | None,
    ) -> None:
        if isinstance(channels, str | type) or not channels:
            raise StreamConfigurationError(
                f"EventStreamView needs channels=[...], a list of one or more channels; "
                f"got {channels!r}"
            )
        for name, value, low in (("heartbeat", heartbeat, 0.0), ("retry", retry, -1.0)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= low:
                raise StreamConfigurationError(
                    f"EventStreamView's {name} is in seconds and must be a number > "
                    f"{0 if low == 0 else 'or = 0'}, got {value!r}"
                )
        for name, count in (("max_queue", max_queue), ("batch_size", batch_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise StreamConfigurationError(
                    f"EventStreamView's {name} must be an integer >= 1, got {count!r}"
                )
        try:
            # Checks that every channel can be subscribed to (connects nothing).
            probe = Subscription(tuple(channels), None, max_queue, using)
        except (SubscriptionError, StreamConfigurationError) as exc:
            raise StreamConfigurationError(f"EventStreamView: {exc}") from exc
        self.channels: list[type[BaseChannel]] = probe.channels
        self.using: str = probe.using
        self.formats: dict[type[BaseChannel], Format] = formats(self.channels, fields)
        self.heartbeat = float(heartbeat)
        self.retry_ms = round(float(retry) * 1000)
        self.max_queue = max_queue
        self.batch_size = batch_size
        #: Whether a client can resume from an event id: every channel keeps its events.
        self.resumable = all(channel.retained() for channel in self.channels)
        self._messages: collections.OrderedDict[tuple[str, Variant], bytes] = (
            collections.OrderedDict()
        )

    def message(self, event: Event, variant: Variant) -> bytes:
        """The SSE message of ``event`` as ``variant`` shows it (encoded once, then cached)."""
        key = (event.id, variant)
        message = self._messages.get(key)
        if message is None:
            data = self.formats[event.channel].data(event, variant)
            message = b"id: %s\nevent: %s\ndata: %s\n\n" % (
                event.id.encode(),
                event.channel.name().encode(),
                data,
            )
            self._messages[key] = message
            if len(self._messages) > MESSAGE_CACHE_SIZE:
                self._messages.popitem(last=False)
        return message


class EventStreamView(View):
    """An async view that streams channels' events to the browser (``text/event-stream``).

    Configure it with :meth:`as_view` arguments or as class attributes of a
    subclass:

    ``channels``
        The channels whose events the stream carries (classes or dotted paths).
    ``fields``
        For trigger channels, the model fields that ``old`` and ``new``
        carry: a list for every trigger channel, or a dict from channel to
        list. The default is the primary key alone: a stream never sends a
        column that was not chosen.
    ``heartbeat``
        Seconds of silence after which a comment is sent, so that proxies
        keep the connection open (default 15).
    ``retry``
        Seconds the browser waits before it reconnects (default 3), sent as
        ``retry:``.
    ``max_queue``
        Events that may wait for one client; a client further behind is
        disconnected and resumes from its last event id (default 1000).
    ``using``
        The database alias (default: ``PGPUBSUB_DATABASE`` or ``default``).

    Override :meth:`get_scope` to decide, per request, which events a
    client may see. Django's login and permission mixins and decorators
    work on the view.
    """

    channels: ClassVar[Sequence[type[BaseChannel] | str]] = ()
    fields: ClassVar[FieldsSpec] = None
    heartbeat: ClassVar[float] = 15.0
    retry: ClassVar[float] = 3.0
    max_queue: ClassVar[int] = 1000
    #: Events taken from the subscription per write to the client.
    batch_size: ClassVar[int] = 100
    using: ClassVar[str | None] = None

    # Set by as_view() on each instance.
    stream: StreamSettings

    _wsgi_logged: ClassVar[bool] = False

    def get_scope(self, channel: type[BaseChannel]) -> ScopeSpec:
        """Which of ``channel``'s events this request may see (called once per request).

        Return ``None`` for every event (the default), or:

        * for a :class:`~pgpubsub.TriggerChannel`, a QuerySet of its model:
          an event is shown when the queryset admits its old or new row,
          judged on the row as the event carries it (see "Live updates in
          the browser" in the documentation); or a function of a model
          instance that says whether the instance is in scope (it must not
          query the database);
        * for a :class:`~pgpubsub.Channel`, a function of the
          ``pgpubsub.Event`` that says whether to send it.

        ``self.request`` is the request. The method may be ``async def``;
        a plain method runs in a thread, where it may use the ORM and
        ``request.user``. Raise ``PermissionDenied`` to refuse the stream.
        """
        return None

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        """The view function; the configuration is checked here, when the URLconf loads."""
        if django.VERSION < (5, 0):
            raise StreamConfigurationError(
                "pgpubsub.sse.EventStreamView needs Django 5.0 or newer: Django "
                f"{django.get_version()} does not tell a streaming view that its client "
                "disconnected, so streams would never end"
            )
        _refuse_buffering_middleware()
        # Django's own checks of the arguments (unknown names, method names).
        super().as_view(**initkwargs)
        settings = StreamSettings(
            channels=initkwargs.get("channels", cls.channels),
            fields=initkwargs.get("fields", cls.fields),
            heartbeat=initkwargs.get("heartbeat", cls.heartbeat),
            retry=initkwargs.get("retry", cls.retry),
            max_queue=initkwargs.get("max_queue", cls.max_queue),
            batch_size=initkwargs.get("batch_size", cls.batch_size),
            using=initkwargs.get("using", cls.using),
        )

        async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not isinstance(getattr(request, "scope", None), dict):
                return cls._refuse_wsgi(request)
            self = cls(**initkwargs)
            self.stream = settings

            def checks() -> Any:
                # dispatch() runs in a thread, so that the access checks of
                # Django's mixins (request.user, has_perms()) may query the
                # database; it returns the get() coroutine when they pass.
                self.setup(request, *args, **kwargs)
                return self.dispatch(request, *args, **kwargs)

            response = await sync_to_async(checks)()
            if inspect.isawaitable(response):
                response = await response
            return response

        view.view_class = cls  # type: ignore[attr-defined]
        view.view_initkwargs = initkwargs  # type: ignore[attr-defined]
        view.__doc__ = cls.__doc__
        view.__module__ = cls.__module__
        view.__qualname__ = f"{cls.__qualname__}.as_view.<locals>.view"
        # Attributes that decorators set on dispatch (e.g. csrf_exempt).
        view.__dict__.update(cls.dispatch.__dict__)
        return view

    @classmethod
    def _refuse_wsgi(cls, request: HttpRequest) -> HttpResponse:
        if not EventStreamView._wsgi_logged:
            EventStreamView._wsgi_logged = True
            logger.error(
                "pgpubsub: %s (%s) was served by a WSGI server; it needs an ASGI server "
                "(uvicorn, daphne, hypercorn) with the project's asgi.py",
                cls.__name__,
                request.path,
            )
        return HttpResponse(
            "This event stream needs an ASGI server (for example uvicorn or daphne serving "
            "the project's asgi.py); it was served by a WSGI server, which cannot hold "
            "streams open.\n",
            status=500,
            content_type="text/plain; charset=utf-8",
        )

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        stream = self.stream
        position = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
        try:
            scopes = await self._scopes()
            judge = judge_for(stream.using)
            for scope in scopes.values():
                if isinstance(scope, RowScope):
                    await judge.check(scope)
        except ScopeError:
            logger.exception("pgpubsub: %s cannot judge its scope", type(self).__name__)
            return _server_error()
        except Exception as exc:
            if _is_http_exception(exc):
                raise
            logger.exception("pgpubsub: %s could not start its stream", type(self).__name__)
            return _server_error()
        response = StreamingHttpResponse(
            self._stream(position or None, scopes), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        # nginx buffers responses unless told not to; a buffered stream stalls.
        response["X-Accel-Buffering"] = "no"
        return response

    async def _scopes(self) -> dict[type[BaseChannel], Scope]:
        """Ask :meth:`get_scope` for each channel and compile the answers."""
        channels = self.stream.channels
        if inspect.iscoroutinefunction(self.get_scope):
            answers = {channel: await self.get_scope(channel) for channel in channels}
            return await sync_to_async(self._compile)(answers)

        def ask_and_compile() -> dict[type[BaseChannel], Scope]:
            return self._compile({channel: self.get_scope(channel) for channel in channels})

        return await sync_to_async(ask_and_compile)()

    def _compile(self, answers: dict[type[BaseChannel], Any]) -> dict[type[BaseChannel], Scope]:
        compiled: dict[type[BaseChannel], Scope] = {}
        for channel, answer in answers.items():
            if answer is None:
                compiled[channel] = None
            elif isinstance(answer, models.QuerySet):
                if not issubclass(channel, TriggerChannel):
                    raise ScopeError(
                        f"get_scope() returned a QuerySet for {channel.name()}, an app channel; "
                        "return a function of the event (or None) instead"
                    )
                compiled[channel] = RowScope.from_queryset(answer, channel, self.stream.using)
            elif callable(answer):
                compiled[channel] = answer
            else:
                raise ScopeError(
                    f"get_scope() returned {answer!r} for {channel.name()}; expected None, "
                    "a QuerySet (trigger channels) or a function"
                )
        return compiled

    async def _stream(
        self, position: str | None, scopes: dict[type[BaseChannel], Scope]
    ) -> AsyncIterator[bytes]:
        """The response body: subscribe, resume or reset, then serve events until the end."""
        stream = self.stream
        # The middleware has run; the access checks, the scope and the
        # middleware may have opened database connections in this request's
        # thread, and the request holds that thread for as long as it lasts.
        # The stream needs neither: thousands of open streams must not hold
        # thousands of connections and threads.
        await sync_to_async(_close_connections)()
        _release_request_thread()
        # Sent at once: the browser learns the retry delay, and the response
        # starts (proxies and clients see the headers) before any event.
        yield b"retry: %d\n\n" % stream.retry_ms
        since: str | None = None
        reset: str | None = None
        if position is not None:
            if stream.resumable:
                since = position
            else:
                reset = (
                    "the stream cannot resume: not all of its channels keep their events "
                    "(set `retention` on them)"
                )
        while True:
            try:
                async with Subscription(
                    tuple(stream.channels), since, stream.max_queue, stream.using
                ) as subscriber:
                    if reset is not None:
                        yield _reset_message(subscriber.start_id, reset)
                        reset = None
                    elif since is None:
                        # A position before any event: a reconnect resumes from it.
                        yield b"id: %s\n\n" % subscriber.start_id.encode()
                    async for chunk in self._serve(subscriber, scopes):
                        yield chunk
            except InvalidCheckpoint as exc:
                logger.warning("pgpubsub: an event stream was given a bad position: %.300s", exc)
                reset = f"the last event id is not a position of this stream: {exc}"[:300]
                since = None
            except CheckpointExpired as exc:
                reset = (
                    "the last event id is older than the channels' retention; "
                    f"the oldest position still available is {exc.oldest}"
                )
                since = None
            except EventsMayBeMissed:
                reset = "the server lost its database connection; events may have been missed"
                since = None
            except SubscriberTooSlow as exc:
                # The client fell behind: end the response; the browser
                # reconnects with Last-Event-ID and resumes (or gets a reset).
                logger.info("pgpubsub: an event stream client fell behind: %s", exc)
                return
            except SubscriptionEnded as exc:
                logger.warning("pgpubsub: an event stream ended: %s", exc)
                return
            except Exception:
                # Never a traceback to the client: it reconnects and resumes.
                logger.exception("pgpubsub: an event stream failed")
                return

    async def _serve(
        self, subscriber: Subscriber, scopes: dict[type[BaseChannel], Scope]
    ) -> AsyncIterator[bytes]:
        stream = self.stream
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        #: The last event read that the client has not been told it is past.
        unsent_id: str | None = None
        while True:
            wait = max(0.0, stream.heartbeat - (loop.time() - last_write))
            batch = await subscriber.next_batch(stream.batch_size, timeout=wait)
            messages = await self._messages(batch, scopes) if batch else []
            chunk = b"".join(message for _, message in messages)
            if batch and (not messages or messages[-1][0] != batch[-1].id):
                unsent_id = batch[-1].id
            elif messages:
                unsent_id = None
            if chunk:
                if unsent_id is not None:
                    # The last events were out of scope: move the client's
                    # position past them (an id without data is no event).
                    chunk += b"id: %s\n\n" % unsent_id.encode()
                    unsent_id = None
                yield chunk
                last_write = loop.time()
            elif loop.time() - last_write >= stream.heartbeat:
                heartbeat = b": heartbeat\n"
                if unsent_id is not None:
                    heartbeat += b"id: %s\n" % unsent_id.encode()
                    unsent_id = None
                yield heartbeat + b"\n"
                last_write = loop.time()

    async def _messages(
        self, batch: list[Event], scopes: dict[type[BaseChannel], Scope]
    ) -> list[tuple[str, bytes]]:
        """The messages (event id, message) of the events of a batch this client's scopes admit."""
        stream = self.stream
        batch = [event for event in batch if stream.formats[event.channel].counts(event)]
        verdicts: dict[str, tuple[bool, bool]] = {}
        judge = None
        for channel, scope in scopes.items():
            if isinstance(scope, RowScope):
                events = [event for event in batch if event.channel is channel]
                if events:
                    judge = judge or judge_for(stream.using)
                    for event, verdict in zip(events, await judge.verdicts(scope, events)):
                        verdicts[event.id] = verdict
        messages = []
        for event in batch:
            scope = scopes.get(event.channel)
            if scope is None:
                variant: Variant | None = Variant.FULL
            elif isinstance(scope, RowScope):
                variant = _variant(event, verdicts[event.id])
            elif issubclass(event.channel, TriggerChannel):
                old, new = event.kwargs["old"], event.kwargs["new"]
                verdict = (
                    old is not None and bool(scope(old)),
                    new is not None and bool(scope(new)),
                )
                variant = _variant(event, verdict)
            else:
                variant = Variant.FULL if scope(event) else None
            if variant is not None:
                messages.append((event.id, stream.message(event, variant)))
        return messages


#: Middleware that buffers streaming responses, stalling every stream.
BUFFERING_MIDDLEWARE = ("django.middleware.gzip.GZipMiddleware",)


def _refuse_buffering_middleware() -> None:
    from django.conf import settings

    for name in getattr(settings, "MIDDLEWARE", None) or ():
        if name in BUFFERING_MIDDLEWARE:
            raise StreamConfigurationError(
                f"{name} is in MIDDLEWARE: it compresses streaming responses without "
                "flushing, so a stream's events would wait in its buffer. Remove it and "
                "compress at the proxy (leaving text/event-stream alone), or decorate the "
                "views to compress with django.views.decorators.gzip.gzip_page"
            )


def _variant(event: Event, verdict: tuple[bool, bool]) -> Variant | None:
    """How a trigger event shows to a client whose scope admits its (old, new) rows."""
    old_in, new_in = verdict
    if old_in and new_in:
        return Variant.FULL
    if event.op == "UPDATE":
        if new_in:
            return Variant.ENTER
        if old_in:
            return Variant.LEAVE
        return None
    # An insert has only a new row, a delete only an old one.
    return Variant.FULL if old_in or new_in else None


def _reset_message(position: str, reason: str) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        position.encode(),
        RESET_EVENT.encode(),
        _encode({"reason": reason}),
    )


def _server_error() -> HttpResponse:
    return HttpResponse(
        "The event stream could not start; the server log says why.\n",
        status=500,
        content_type="text/plain; charset=utf-8",
    )


def _is_http_exception(exc: Exception) -> bool:
    """Exceptions Django turns into responses itself (403, 404, 400)."""
    from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
    from django.http import Http404

    return isinstance(exc, PermissionDenied | Http404 | BadRequest | SuspiciousOperation)


class _StreamEndExecutor(concurrent.futures.ThreadPoolExecutor):
    """The one thread that runs the sync code at the end of every stream of the process.

    When a stream ends, Django's ASGI handler sends ``request_finished``
    (or closes the response) through ``sync_to_async``, on the request's
    thread. The streams let that thread go when they start, so without this
    each ending stream would start a thread of its own: a thousand clients
    that leave at once (a proxy restart, a deploy) would make a thousand
    threads. Instead they queue here, one call at a time on one thread (the
    ``pgpubsub-stream-end`` thread), started on first use.

    ``shutdown()`` does nothing: asgiref shuts a request's executor down when
    the request ends, and this one serves every stream of the process.
    """

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing: the executor is shared by every stream (see the class)."""


_STREAM_END = _StreamEndExecutor(max_workers=1, thread_name_prefix="pgpubsub-stream-end")


def _release_request_thread() -> None:
    """Let the thread that Django's ASGI handler keeps for this request go.

    Under ASGI, Django runs a request's sync code (middleware, signal
    receivers, ``sync_to_async`` calls) on a thread of the request's own
    (asgiref's ``ThreadSensitiveContext``), kept until the request ends: for
    a stream, until the client leaves. Once the stream starts, nothing runs
    there until the end, so the thread is shut down now, and the sync code
    at the end of the request (the ``request_finished`` signal) runs on the
    thread that every stream of the process shares for it
    (:class:`_StreamEndExecutor`). Without asgiref's context, or in a
    context given its own executor, the call does nothing.
    """
    from asgiref.sync import SyncToAsync

    context_var = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    context = context_var.get(None) if context_var is not None else None
    if context is None or executors is None or getattr(context, "_executor", None) is not None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)
    executors[context] = _STREAM_END


def _close_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


__all__ = ["RESET_EVENT", "EventStreamView", "StreamSettings"]
