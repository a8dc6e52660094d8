"""Client managers: the message queue that lets every Nexus process, worker and script emit into
the same rooms, and the per-socket catch-up screening of nexus.realtime.gate.

Publishing goes through an Outbox: a publish that the broker refuses is kept and retried in the
background, in order, so that a broker outage never blocks a Socket.IO handler and never loses
what was published during it (up to the outbox's capacity). The listener reconnects by itself
and accepts only JSON: nothing read from the queue is ever unpickled.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import kombu
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from nexus.config import Config
from nexus.realtime import jsonenc
from nexus.realtime.gate import RoomGate, merged_skip
from nexus.realtime.sequencer import Sequencer
from nexus.protocol.websocket import DirectOutput
from nexus.stores.sentinel import kombu_broker

log = logging.getLogger("nexus.queue")

_PROBE = "nexus_probe"
CONTROL_MARK = '"nexus_control"'  # nexus.realtime.control.METHOD, as it appears in a JSON message

#: Messages kept while the broker is unreachable; beyond this the oldest are dropped.
OUTBOX_CAPACITY = 10_000
#: Backoff between retries of the outbox (seconds).
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
#: One publish attempt: connect and socket timeouts (seconds). A handler waits at most about this.
PUBLISH_TIMEOUT_S = 1.0
#: The listener: connect timeout, and its reconnection backoff (seconds).
LISTEN_CONNECT_TIMEOUT_S = 5.0
LISTEN_RETRY_MIN_S = 0.5
LISTEN_RETRY_MAX_S = 2.0
#: After an outage, how long the outbox waits once the broker is back before sending what it kept,
#: so that every instance's listener (retrying every LISTEN_RETRY_MAX_S at most) is subscribed again.
RECOVERY_SETTLE_S = LISTEN_RETRY_MAX_S + 1.0
#: AMQP heartbeat of the listener, so a dead broker connection is noticed (seconds).
LISTEN_HEARTBEAT_S = 10
#: The only content the listener decodes.
ACCEPT = ("json",)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def spawn_thread(target: Callable[[], Any]) -> Any:
    """Run a function in a daemon thread (a greenlet where gevent has patched threading)."""
    thread = threading.Thread(target=target, name="nexus-outbox", daemon=True)
    thread.start()
    return thread


class Outbox:
    """In-order publishing that survives a broker outage.

    `put` publishes at once when nothing is waiting; when the broker refuses, the message is
    kept and a background worker retries with exponential backoff (`min_delay` to `max_delay`).
    While anything is waiting, new messages queue behind it, so the order of `put` calls is the
    order of publication. At most `capacity` messages are kept; beyond that the oldest are
    dropped and counted (logged as an ERROR). Each outage is logged once when it starts and once
    when it ends.

    With a `probe`, the worker retries with the probe instead of the oldest message, and once
    the broker takes it waits `settle` seconds before sending what it kept: the listeners of the
    other processes, which lost the broker too, resubscribe meanwhile instead of missing it.
    """

    def __init__(
        self,
        send: Callable[[Any], None],
        *,
        spawn: Callable[[Callable[[], Any]], Any] = spawn_thread,
        capacity: int = OUTBOX_CAPACITY,
        min_delay: float = RETRY_MIN_S,
        max_delay: float = RETRY_MAX_S,
        probe: Callable[[], None] | None = None,
        settle: float = 0.0,
        name: str = "message queue",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._send = send
        self._spawn = spawn
        self._probe = probe
        self.capacity = capacity
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.settle = settle
        self.name = name
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[Any] = collections.deque()
        self._busy = False  # a publish (direct or by the worker) is in flight
        self._worker_has_one = False  # the in-flight publish is a kept message (counted as pending)
        self._worker: Any = None
        self._stopped = False
        # The current outage.
        self._failing = False
        self._probed = False  # the probe went through: sending the kept messages after `settle`
        self._since: float | None = None  # wall clock
        self._since_mono: float | None = None
        self._last_error: str | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._sent_late = 0
        self._dropped_now = 0
        # Totals over the life of the outbox.
        self.sent = 0
        self.dropped = 0
        self.failures = 0

    # -- publishing -----------------------------------------------------------------------

    def put(self, message: Any, done: Callable[[], None] | None = None) -> bool:
        """Publish a message, or keep it for the worker; True when it was published now.

        `done` is called once the broker has taken the message (now, or later from the worker);
        never for a message dropped because the outbox was full.
        """
        if done is not None:
            message = _Tracked(message, done)
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"the {self.name} outbox is closed")
            if self._pending or self._busy or self._failing:
                self._keep(message)
                self._start_worker()
                self._cond.notify_all()
                return False
            self._busy = True
        error = self._attempt(self._send, message)
        with self._cond:
            self._busy = False
            if error is None:
                self.sent += 1
                _confirm(message)
            else:
                self._pending.appendleft(message)
                self._trim()
                self._failed(error)
                self._start_worker()
            self._cond.notify_all()
        return error is None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is waiting or in flight; False if that did not happen within `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def retry_now(self) -> None:
        """Skip the rest of the current backoff (the broker is known to be back)."""
        with self._cond:
            if self._failing and not self._probed:
                self._retry_at = self._clock()
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the worker; what is still waiting is abandoned (flush first)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        """{"ok", "pending", "since", "lastError", "dropped"}: ok is False during an outage."""
        with self._cond:
            return {
                "ok": not self._failing,
                "pending": len(self._pending) + (1 if self._worker_has_one else 0),
                "since": _iso(self._since),
                "lastError": self._last_error,
                "dropped": self.dropped,
            }

    @property
    def delay(self) -> float:
        """The current backoff (0 when the broker is reachable)."""
        return self._delay

    # -- the worker -------------------------------------------------------------------------

    def _start_worker(self) -> None:
        # Called with the lock held.
        if self._worker is None and not self._stopped:
            self._worker = True  # claimed before spawning: spawn may switch greenlets
            self._worker = self._spawn(self._run)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._pending and not self._busy:
                        wait = self._retry_at - self._clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                probing = self._failing and self._probe is not None and not self._probed
                message = None if probing else self._pending.popleft()
                self._busy = True
                self._worker_has_one = not probing
            if probing:
                error = self._attempt(lambda _none: self._probe(), None)  # type: ignore[misc]
            else:
                error = self._attempt(self._send, message)
            with self._cond:
                self._busy = False
                self._worker_has_one = False
                if probing:
                    self._probe_done(error)
                elif error is None:
                    self.sent += 1
                    _confirm(message)
                    if self._failing:
                        self._sent_late += 1
                        self._delay = 0.0
                        self._retry_at = self._clock()
                        if not self._pending:
                            self._recovered()
                else:
                    self._pending.appendleft(message)
                    self._trim()
                    self._failed(error)
                self._cond.notify_all()

    @staticmethod
    def _attempt(send: Callable[[Any], None], message: Any) -> BaseException | None:
        try:
            send(message.body if type(message) is _Tracked else message)
        except Exception as exc:  # any broker, network or timeout error: keep the message
            return exc
        return None

    # -- bookkeeping (lock held) ----------------------------------------------------------------

    def _probe_done(self, error: BaseException | None) -> None:
        if error is not None:
            self._failed(error)
            return
        self._probed = True
        self._delay = 0.0
        self._retry_at = self._clock() + self.settle
        log.info(
            "%s answers again: sending %d kept message(s) in %.1fs", self.name, len(self._pending), self.settle
        )

    def _keep(self, message: Any) -> None:
        self._pending.append(message)
        self._trim()

    def _trim(self) -> None:
        while len(self._pending) > self.capacity:
            self._pending.popleft()
            self.dropped += 1
            self._dropped_now += 1
            if self._dropped_now == 1 or self._dropped_now % 1000 == 0:
                log.error(
                    "%s outbox is full (%d messages): dropped %d of the oldest so far in this outage",
                    self.name,
                    self.capacity,
                    self._dropped_now,
                )

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        self._probed = False
        self._last_error = _describe(error)
        now = self._clock()
        if not self._failing:
            self._failing = True
            self._since = self._wall_clock()
            self._since_mono = now
            self._sent_late = 0
            self._dropped_now = 0
            self._delay = self.min_delay
            log.error(
                "%s unreachable (%s): keeping messages in the outbox and retrying in the background",
                self.name,
                self._last_error,
            )
        else:
            self._delay = min(self.max_delay, max(self.min_delay, self._delay * 2))
        self._retry_at = now + self._delay

    def _recovered(self) -> None:
        took = self._clock() - (self._since_mono or self._clock())
        dropped = f", dropped {self._dropped_now}" if self._dropped_now else ""
        log.warning(
            "%s reachable again after %.1fs: sent %d message(s) late%s", self.name, took, self._sent_late, dropped
        )
        self._failing = False
        self._probed = False
        self._since = self._since_mono = None
        self._last_error = None
        self._delay = 0.0
        self._sent_late = 0
        self._dropped_now = 0


class _Tracked:
    """A kept message and what to call once the broker has it."""

    __slots__ = ("body", "done")

    def __init__(self, body: Any, done: Callable[[], None]):
        self.body = body
        self.done = done


def _confirm(message: Any) -> None:
    if type(message) is _Tracked:
        try:
            message.done()
        except Exception:  # the publication stands; its bookkeeping is retried by the outbox relay
            log.exception("a publication's confirmation callback failed")


class Publication:
    """The queue publications of one outbox entry: calls `done` once the broker has them all.

    Made by the outbox relay around the delivery of an entry's events; the publisher reports
    each message it publishes meanwhile (see `tracking`).
    """

    __slots__ = ("done", "expected", "confirmed", "sealed", "fired")

    def __init__(self, done: Callable[[], None]):
        self.done = done
        self.expected = 0
        self.confirmed = 0
        self.sealed = False
        self.fired = False

    def expect(self) -> None:
        self.expected += 1

    def confirm(self) -> None:
        self.confirmed += 1
        self._check()

    def seal(self) -> None:
        """Every publication has been made (confirmed or kept): `done` may fire now or later."""
        self.sealed = True
        self._check()

    @property
    def complete(self) -> bool:
        return self.fired

    def _check(self) -> None:
        if self.sealed and not self.fired and self.confirmed >= self.expected:
            self.fired = True
            self.done()


# The publication being made by this greenlet (threading.local is greenlet-local under gevent).
_tracking = threading.local()


@contextlib.contextmanager
def tracking(publication: Publication) -> Iterator[Publication]:
    """Within the block, what this greenlet publishes to the queue is counted by `publication`."""
    previous = getattr(_tracking, "current", None)
    _tracking.current = publication
    try:
        yield publication
    finally:
        _tracking.current = previous
        publication.seal()


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+sentinel://"))


def _broker(url: str) -> str:
    """The URL kombu connects to: a `redis+sentinel://` URL becomes kombu's `sentinel://` form."""
    return kombu_broker(url)[0]


def _transport_options(url: str, *, publisher: bool) -> dict[str, Any]:
    if _is_redis(url):
        # Behind Sentinel: which primary to ask the Sentinels for, and how to reach them.
        sentinel = kombu_broker(url)[1]
        if publisher:
            return {"socket_timeout": PUBLISH_TIMEOUT_S, "socket_connect_timeout": PUBLISH_TIMEOUT_S, **sentinel}
        return {"socket_connect_timeout": LISTEN_CONNECT_TIMEOUT_S, **sentinel}
    if publisher:
        # Publisher confirms: a publish counts as done only when the broker has it; a dead
        # connection shows up as an error instead of a message silently written into it.
        return {"confirm_publish": True, "read_timeout": PUBLISH_TIMEOUT_S, "write_timeout": PUBLISH_TIMEOUT_S}
    return {}


class _ResilientPublisher:
    """Bounded publish attempts behind an Outbox, for python-socketio's KombuManager."""

    url: str
    channel: str
    producer_options: dict[str, Any]
    outbox: Outbox

    def _setup_publisher(self, spawn: Callable[[Callable[[], Any]], Any]) -> None:
        self._publisher_lock = threading.Lock()
        self._producer: Any = None
        self.publisher_connection = self._publisher_connection()
        self.outbox = Outbox(
            self._send_now, spawn=spawn, probe=self._send_probe, settle=RECOVERY_SETTLE_S, name="message queue"
        )

    def _publisher_connection(self) -> kombu.Connection:
        return kombu.Connection(
            _broker(self.url),
            connect_timeout=PUBLISH_TIMEOUT_S,
            transport_options=_transport_options(self.url, publisher=True),
        )

    def _publish(self, data: Any) -> None:
        # Encoded now: a message that cannot be encoded is the caller's bug, not an outage.
        body = self.json.dumps(data)
        publication = getattr(_tracking, "current", None)
        if publication is None:
            self.outbox.put(body)
        else:
            publication.expect()
            self.outbox.put(body, done=publication.confirm)

    def _send_now(self, body: str) -> None:
        """One bounded publish: a stale connection is replaced and tried once more; errors raise."""
        with self._publisher_lock:
            for attempt in (1, 2):
                connection = self.publisher_connection
                # Only a connection that broke while idle (the broker restarted) fails fast and is
                # worth one more try; a slow failure already used the time a publish may take.
                was_connected = connection.connected
                started = time.monotonic()
                try:
                    connection.ensure_connection(max_retries=0)  # one connect, within connect_timeout
                    if self._producer is None:
                        options = {"serializer": "json", **self.producer_options}
                        self._producer = kombu.Producer(connection.default_channel, exchange=self._exchange(), **options)
                    self._producer.publish(body)
                    return
                except Exception:
                    self._reset_publisher()
                    slow = time.monotonic() - started > PUBLISH_TIMEOUT_S / 4
                    if attempt == 2 or not was_connected or slow:
                        raise

    def _send_probe(self) -> None:
        """A message every process ignores: tells whether the broker takes publications again."""
        self._send_now(self.json.dumps({"method": _PROBE, "token": "outbox", "host_id": self.host_id}))

    def _reset_publisher(self) -> None:
        self._producer = None
        old, self.publisher_connection = self.publisher_connection, self._publisher_connection()
        try:
            old.collect(socket_timeout=0.1)
        except Exception:
            pass

    def queue_status(self) -> dict[str, Any]:
        """{"ok", "pending", "since", "lastError", ...}: whether published events reach the broker now."""
        return self.outbox.status()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every published message has reached the broker; False on timeout."""
        return self.outbox.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the outbox worker and release the publisher connection."""
        flushed = self.outbox.flush(timeout)
        self.outbox.close()
        with self._publisher_lock:
            self._producer = None
            try:
                self.publisher_connection.collect(socket_timeout=0.1)
            except Exception:
                pass
        return flushed


class _GatedManager(socketio.Manager):
    """Local fan-out that leaves out the sockets a RoomGate holds back."""

    gate: RoomGate | None = None
    sequencer: Sequencer | None = None
    _recorders: dict[str, list[list[tuple[str, str, Any]]]] | None = None
    #: The rooms of each socket, by (namespace, sid): python-socketio finds them by scanning every
    #: room of the namespace, on each disconnect, which made a reconnect storm quadratic.
    _memberships: dict[tuple[str, str], set[Any]] | None = None

    # -- each socket's rooms, indexed -------------------------------------------------------

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self._memberships is None:
            self._memberships = {}
        self._memberships.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self._memberships.get((namespace, sid)) if self._memberships else None
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._memberships[(namespace, sid)]

    def basic_disconnect(self, sid, namespace, **kwargs):
        """python-socketio's, with the socket's rooms taken from the index instead of a scan."""
        if namespace not in self.rooms:
            return
        joined = self._memberships.get((namespace, sid)) if self._memberships else None
        for room in sorted(joined or (), key=lambda name: name is None):  # its sid mapping last
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        joined = self._memberships.get((namespace, sid)) if self._memberships else None
        return [room for room in joined or () if room is not None]

    @contextlib.contextmanager
    def recording(self, room: str) -> Iterator[list[tuple[str, str, Any]]]:
        """What this process delivers to `room` while the block runs, as (namespace, event, data):
        for a snapshot read while events reach the sockets it is for (the online list)."""
        if self._recorders is None:
            self._recorders = {}
        seen: list[tuple[str, str, Any]] = []
        active = self._recorders.setdefault(room, [])
        active.append(seen)
        try:
            yield seen
        finally:
            active[:] = [other for other in active if other is not seen]
            if not active:
                self._recorders.pop(room, None)

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        room = to or room
        if self._recorders and isinstance(room, str):
            for seen in self._recorders.get(room, ()):
                seen.append((namespace, event, data))
        if self.sequencer is not None and callback is None and isinstance(room, str):
            rooms = self.rooms.get(namespace, {})
            if not rooms.get(room):
                self.sequencer.forget(namespace, room)  # no socket of this process is in it
                return None
            # To one socket (a catch-up replay, a reply): sent as asked, not sequenced.
            admitted = None if room in rooms.get(None, ()) else self.sequencer.admit(namespace, room, event, data)
            if admitted is not None:
                for name, item in admitted:
                    self._deliver(name, item, namespace, room, skip_sid if item is data else None, None, **kwargs)
                return None
        return self._deliver(event, data, namespace, room, skip_sid, callback, **kwargs)

    def _deliver(self, event, data, namespace, room, skip_sid, callback, **kwargs):
        if self.gate is not None:
            held = self.gate.screen(namespace, room, event, data)
            if held:
                skip_sid = merged_skip(skip_sid, held)
        if callback is not None or namespace not in self.rooms:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
        return self._fan_out(event, data, namespace, room, skip_sid)

    def _fan_out(self, event: str, data: Any, namespace: str, room: Any, skip_sid: Any) -> None:
        """python-socketio's emit to a room, for the hot path: the packet is encoded once and its
        WebSocket frame built once (nexus.protocol.websocket), then written to each member's socket
        from this greenlet; sockets still on long-polling get it through engine.io's queue."""
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        skip = skip_sid if isinstance(skip_sid, (list, tuple, set, frozenset)) else (skip_sid,)
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event] + data).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part)
                   for part in (encoded if isinstance(encoded, list) else [encoded])]
        sockets = self.server.eio.sockets
        send = self.server._send_eio_packet  # python-socketio's path (and what its test client records)
        served = self.server.eio.async_mode == "gevent"  # real sessions (not the test client's)
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            sock = sockets.get(eio_sid)
            if sock is None or sock.closed:
                if served:
                    continue  # gone a moment ago (engine.io would log a warning per socket)
                output = None
            else:
                output = sock.queue
            if type(output) is DirectOutput:
                for pkt in packets:
                    output.put(pkt)
            else:
                for pkt in packets:
                    send(eio_sid, pkt)


class LocalManager(_GatedManager):
    """One process, no message queue."""


class QueueManager(_ResilientPublisher, socketio.KombuManager, _GatedManager):
    """kombu (redis:// or amqp://) with gated local fan-out, an outbox and a listening probe.

    The local fan-out of PubSubManager (its own emissions and those it receives) goes through
    _GatedManager.emit, which comes after PubSubManager in the method resolution order.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup_publisher(self._spawn)
        self._probe_token = uuid.uuid4().hex
        self._listening = threading.Event()
        self._listener_ok = False
        self._listener_error: str | None = "not listening yet"
        self._listener_down_since: float | None = time.time()
        self._listener_down_mono: float | None = time.monotonic()
        self._listener_connected_once = False
        self._listener_reported = False
        #: Orders for this instance (nexus.realtime.control), read next to the events.
        self.control_handler: Callable[[str], None] | None = None

    def _spawn(self, target: Callable[[], Any]) -> Any:
        if self.server is not None:
            return self.server.start_background_task(target)
        return spawn_thread(target)

    def _connection(self) -> kombu.Connection:
        options = {"connect_timeout": LISTEN_CONNECT_TIMEOUT_S, **self.connection_options}
        options.setdefault("transport_options", _transport_options(self.url, publisher=False))
        if not _is_redis(self.url):
            options.setdefault("heartbeat", LISTEN_HEARTBEAT_S)
        return kombu.Connection(_broker(self.url), **options)

    def _listen(self) -> Iterator[Any]:  # python-socketio's generator of raw messages
        delay = LISTEN_RETRY_MIN_S
        while True:
            try:
                yield from self._consume()
            except Exception as exc:  # the broker went away: reconnect with backoff
                if self._listener_ok:
                    delay = LISTEN_RETRY_MIN_S
                self._listener_lost(exc)
            time.sleep(delay)
            delay = min(LISTEN_RETRY_MAX_S, delay * 2)

    def _consume(self) -> Iterator[Any]:
        inbox: collections.deque[Any] = collections.deque()
        connection = self._connection()
        try:
            connection.ensure_connection(max_retries=0)
            consumer = kombu.Consumer(
                connection.default_channel,
                queues=[self._queue()],
                accept=list(ACCEPT),
                no_ack=True,
                callbacks=[lambda body, _message: inbox.append(body)],
                on_decode_error=self._refused,
            )
            with consumer:
                while True:
                    try:
                        connection.drain_events(timeout=1.0)
                    except TimeoutError:
                        pass
                    connection.heartbeat_check()
                    self._listener_up()  # subscribed: a drain came back without an error
                    while inbox:
                        message = inbox.popleft()
                        if isinstance(message, str) and self._probe_token in message:
                            self._listening.set()  # our own probe came back; python-socketio ignores it
                            continue
                        if isinstance(message, str) and CONTROL_MARK in message and self.control_handler:
                            self._control(message)
                            continue
                        yield message
        finally:
            try:
                connection.collect(socket_timeout=0.1)  # no close handshake with a broker that is gone
            except Exception:
                pass

    def _control(self, message: str) -> None:
        try:
            self.control_handler(message)
        except Exception:
            log.exception("a control order from the queue failed")

    def _refused(self, message: Any, exc: BaseException) -> None:
        log.warning(
            "ignored a message on the queue channel %s that is not JSON (content type %s): %s",
            self.channel,
            getattr(message, "content_type", "?"),
            type(exc).__name__,
        )

    def _listener_up(self) -> None:
        if self._listener_ok:
            return
        self._listener_ok = True
        if self._listener_connected_once:
            took = time.monotonic() - (self._listener_down_mono or time.monotonic())
            log.warning("message queue listener subscribed again after %.1fs", took)
        self._listener_connected_once = True
        self._listener_reported = False
        self._listener_error = None
        self._listener_down_since = self._listener_down_mono = None
        self.outbox.retry_now()  # the broker is back: no need to wait out the publisher's backoff

    def _listener_lost(self, exc: BaseException) -> None:
        self._listening.clear()
        self._listener_error = _describe(exc)
        if self._listener_ok or self._listener_down_since is None:
            self._listener_down_since, self._listener_down_mono = time.time(), time.monotonic()
        if not self._listener_reported:  # once per outage
            self._listener_reported = True
            log.error("message queue listener cannot reach the broker (%s); reconnecting", self._listener_error)
        self._listener_ok = False

    def queue_status(self) -> dict[str, Any]:
        """The outbox's status, failing too while the listener is not subscribed."""
        status = self.outbox.status()
        status["listening"] = self._listener_ok
        if not self._listener_ok:
            status["ok"] = False
            status["lastError"] = status["lastError"] or self._listener_error
            listener_since = _iso(self._listener_down_since)
            if listener_since and (status["since"] is None or listener_since < status["since"]):
                status["since"] = listener_since
        return status

    def wait_until_listening(self, timeout: float) -> bool:
        """Publish probes until one comes back through the queue: the subscription is live."""
        deadline = time.monotonic() + timeout
        while not self._listening.is_set() and time.monotonic() < deadline:
            try:
                self._send_now(self.json.dumps({"method": _PROBE, "token": self._probe_token, "host_id": self.host_id}))
            except Exception as exc:  # the broker is down: start anyway, the listener retries
                log.warning("message queue probe failed: %s", type(exc).__name__)
                return False
            self._listening.wait(0.2)
        return self._listening.is_set()


class QueueEmitter(_ResilientPublisher, socketio.KombuManager):
    """A write-only manager for processes that serve no clients: an outbox on a daemon thread."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, write_only=True, **kwargs)
        self._setup_publisher(spawn_thread)


def client_manager(config: Config, *, write_only: bool = False) -> Any:
    """The client manager of a server (gated fan-out; kombu when MESSAGE_QUEUE_URL is set), or a
    write-only kombu emitter for processes that serve no clients (None without a queue).

    Servers and external emitters must agree on both the URL and the channel, so every
    process builds its manager here.
    """
    if not config.message_queue_url:
        return None if write_only else LocalManager()
    if write_only:
        return QueueEmitter(config.message_queue_url, channel=config.queue_channel, json=jsonenc)
    return QueueManager(config.message_queue_url, channel=config.queue_channel)


def start_listening(server: Any, timeout: float = 10.0) -> None:
    """Subscribe to the message queue now, and wait until the subscription is live.

    python-socketio starts the listener lazily, on the first client connection; until then an
    instance misses what other processes publish, so a broadcast sent just after start would
    skip its first clients. kombu subscribes inside the listener greenlet, so this waits for a
    probe to make the round trip before the server takes connections.
    """
    manager = server.manager
    if not getattr(server, "manager_initialized", True):
        server.manager_initialized = True
        manager.initialize()
    if isinstance(manager, QueueManager) and not manager.wait_until_listening(timeout):
        log.warning("the message queue did not answer within %.0fs; serving anyway", timeout)
