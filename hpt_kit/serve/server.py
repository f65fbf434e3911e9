"""``hpt-kit serve``: the fleet behind a websocket, msgpack messages (``hpt_kit.core.wire``).

Why websockets + msgpack: one long-lived connection per robot (no per-request handshake at control
rate), binary frames that carry numpy arrays as raw bytes, a small pure-Python client, and the
pattern robot-policy servers commonly use. Each connection is served by its own coroutine, so a slow
or vanished client holds up nobody. Predictions run in the event loop's own thread, one batch at a
time: torch's intra-op thread pool belongs to the thread that calls it, and on a small CPU a second
calling thread (measured: a worker thread per prediction) made every prediction 2-3x slower as the
two pools fought for the cores. Requests that arrive during a prediction wait in their sockets and
form the next batch.

Dynamic batching: the first robot that needs a new chunk opens a window of ``batch_window_ms``;
every chunk asked for until it closes (or until ``max_batch``, or until every robot inside a request
is waiting for one) goes through one trunk pass.

Every action sent lies within the embodiment's advertised ``action_low``/``action_high``: a network's
output outside them is clipped, and ``stats`` counts the actions (``clipped_actions``) and values
(``clipped_values``) that were.

Each robot name holds a session (its closed-loop history) until it is silent for ``idle_timeout_s``;
``max_robots`` live sessions per server and ``max_robots_per_connection`` per connection bound that
memory: a new robot beyond either is refused with an error reply, and the robots already served keep
acting.

Chunk streaming (``op: "chunk"``, protocol 2): instead of one action per request, a robot sends the
observations of the steps since its last request (at most ``observation_horizon``, oldest first)
with the step index of the last, and gets back the whole predicted chunk, clipped row by row, with
that step and the control period (``control_hz``, ``period_s``): row i is the action for step ``step + i``. The robot's side
(:class:`hpt_kit.client.ChunkStream`) executes chunks while the next one is on its way. A robot
either acts step by step or streams chunks between two resets, never both: each keeps the history
the other expects.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpt_kit.core.wire import PROTOCOL, WireError, decode, encode
from hpt_kit.serve.fleet import Fleet, ServeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # localhost unless the user opens it to a network
    port: int = 8765
    token: str | None = None  # required from every connection when set (Authorization: Bearer ...)
    batching: bool = True
    batch_window_ms: float = 0.5
    max_batch: int = 64
    idle_timeout_s: float = 300.0  # a robot silent this long loses its closed-loop state
    max_message_bytes: int = 16 * 2**20
    max_robots: int = 256  # live robot sessions; each holds a policy's history, so many names must not grow memory without end
    max_robots_per_connection: int = 32  # one client cannot take every place


@dataclass
class Session:
    embodiment: str
    policy: Any
    seen: float
    owner: int = 0  # the connection that reset it last (0: called in-process)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    streams: bool | None = None  # since its reset: None (no step yet), False (act), True (chunk)
    last_step: int = -1  # streaming: the step of the last observation received


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    actions: int = 0
    predictions: int = 0
    batches: int = 0
    largest_batch: int = 0
    refused_connections: int = 0
    refused_robots: int = 0
    clipped_actions: int = 0  # actions with a value outside [action_low, action_high], sent clipped
    clipped_values: int = 0
    chunks: int = 0  # chunks streamed (op "chunk"); their rows count in actions

    def as_dict(self, sessions: int) -> dict[str, Any]:
        mean = self.predictions / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch": mean, "sessions": sessions}


class Batcher:
    """Collects chunk requests for ``window`` seconds (or ``max_batch`` of them) and predicts them
    together, one batch at a time."""

    def __init__(self, fleet: Fleet, stats: Stats, window: float, max_batch: int, in_flight: Callable[[], int] = lambda: 0):
        self.fleet, self.stats, self.window, self.max_batch = fleet, stats, window, max_batch
        self.in_flight = in_flight  # robots inside a request now: when all of them wait, waiting longer gains nothing
        self._pending: list[tuple[str, Any, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None


    async def predict(self, embodiment: str, history: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((embodiment, history, future))  # unchanged until answered: the robot waits
        if len(self._pending) >= min(self.max_batch, max(1, self.in_flight())) or self.window <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[str, Any, asyncio.Future]]) -> None:
        try:
            chunks = self.fleet.predict([(e, h) for e, h, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting robot gets the error, the server lives
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.predictions += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for (*_, future), chunk in zip(batch, chunks):
            if not future.done():  # a client that vanished leaves its future cancelled
                future.set_result(chunk)


class PolicyServer:
    def __init__(self, fleet: Fleet, config: ServerConfig = ServerConfig()):
        self.fleet, self.config = fleet, config
        self.sessions: dict[str, Session] = {}
        self._owned: Counter[int] = Counter()  # live sessions per connection
        self._connections = itertools.count(1)
        self.stats = Stats()
        self._batcher: Batcher | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0

    async def run(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; ``ready(port)`` once listening."""
        from websockets.asyncio.server import serve

        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        window = self.config.batch_window_ms / 1e3 if self.config.batching else 0.0
        max_batch = self.config.max_batch if self.config.batching else 1
        self._batcher = Batcher(self.fleet, self.stats, window, max_batch, lambda: self._in_flight)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
                pass
        async with serve(
            self._connection, self.config.host, self.config.port,
            max_size=self.config.max_message_bytes, process_request=self._authorise,
            compression=None,  # deflate of 100 KB observations cost ~10 ms a round trip; loopback and LANs need none
        ) as server:
            reaper = loop.create_task(self._reap())
            if ready is not None:
                ready(server.sockets[0].getsockname()[1])
            await self._stop.wait()
            reaper.cancel()
        log.info("server stopped: %s", self.stats.as_dict(len(self.sessions)))

    def stop(self) -> None:
        """Stop serving; safe to call from any thread."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _authorise(self, connection: Any, request: Any) -> Any:
        if self.config.token is None:
            return None
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
            return None
        self.stats.refused_connections += 1
        return connection.respond(401, "a valid token is required (Authorization: Bearer TOKEN)\n")

    async def _connection(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        owner = next(self._connections)
        try:
            async for payload in connection:
                reply = await self.handle(payload, owner)
                await connection.send(encode(reply))
        except ConnectionClosed:  # a client that went away mid-request: its robot's state stays until idle
            return

    async def handle(self, payload: bytes | str, owner: int = 0) -> dict[str, Any]:
        """One request -> its reply; a bad request gets an error reply and harms nobody else.
        ``owner`` names the connection it came on (the per-connection robot limit)."""
        self.stats.requests += 1
        ident = None
        try:
            message = decode(payload)
            ident = message.get("id")
            result = await self._dispatch(message, owner)
            return {"id": ident, "ok": True, "result": result}
        except (WireError, ServeError) as exc:
            self.stats.errors += 1
            return {"id": ident, "ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - never let one robot's request take the server down
            self.stats.errors += 1
            log.exception("request failed")
            return {"id": ident, "ok": False, "error": f"internal error ({type(exc).__name__}: {exc})"}

    async def _dispatch(self, message: dict[str, Any], owner: int = 0) -> Any:
        op = message.get("op")
        if op == "metadata":
            return {**self.fleet.metadata(), "protocol": PROTOCOL, "batching": self.config.batching}
        if op == "stats":
            return self.stats.as_dict(len(self.sessions))
        if op not in ("reset", "act", "chunk"):
            raise ServeError(f"op: unknown {op!r}; known: metadata, reset, act, chunk, stats")
        robot = message.get("robot")
        if not isinstance(robot, str) or not robot:
            raise ServeError("robot: a non-empty string naming the robot is required")
        if op == "reset":
            embodiment = message.get("embodiment")
            if not isinstance(embodiment, str):
                raise ServeError("embodiment: a string is required")
            self._admit(robot, owner)
            policy = self.fleet.policy(embodiment)
            self._forget(robot)
            self.sessions[robot] = Session(embodiment, policy, time.monotonic(), owner)
            self._owned[owner] += 1
            return {"robot": robot, "embodiment": embodiment}
        if op == "chunk":
            return await self._chunk(robot, message.get("observations"), message.get("step"))
        return {"action": await self._act(robot, message.get("observation"))}

    def _admit(self, robot: str, owner: int) -> None:
        """A robot new to the server, or new to this connection, must fit under both limits; robots
        already served are never dropped to make room."""
        known = self.sessions.get(robot)
        cfg = self.config
        if known is None and len(self.sessions) >= cfg.max_robots:
            self.stats.refused_robots += 1
            raise ServeError(
                f"robot: {robot!r} refused: the server already serves {len(self.sessions)} robots (max_robots "
                f"{cfg.max_robots}, hpt-kit serve --max-robots); robots silent for {cfg.idle_timeout_s:g} s are dropped"
            )
        if (known is None or known.owner != owner) and self._owned[owner] >= cfg.max_robots_per_connection:
            self.stats.refused_robots += 1
            raise ServeError(
                f"robot: {robot!r} refused: this connection already drives {self._owned[owner]} robots "
                f"(max_robots_per_connection {cfg.max_robots_per_connection}, hpt-kit serve --max-robots-per-connection)"
            )

    def _forget(self, robot: str) -> None:
        session = self.sessions.pop(robot, None)
        if session is not None:
            self._owned[session.owner] -= 1
            if self._owned[session.owner] <= 0:
                del self._owned[session.owner]

    def _session(self, robot: str, streams: bool) -> Session:
        session = self.sessions.get(robot)
        if session is None:
            raise ServeError(f"robot: unknown {robot!r} (reset it first, naming its embodiment)")
        if session.streams is not None and session.streams != streams:
            done, asked = ("streams chunks", "act step by step") if session.streams else ("acts step by step", "stream chunks")
            raise ServeError(f"robot: {robot!r} {done} since its reset; reset it to {asked}")
        return session

    async def _act(self, robot: str, observation: Any) -> Any:
        session = self._session(robot, streams=False)
        observation = self.fleet.check(session.embodiment, observation)
        async with session.lock:  # one step at a time per robot, whatever its connections do
            session.seen = time.monotonic()
            session.streams = False
            self._in_flight += 1
            try:
                needs = session.policy.observe(observation)
                chunk = await self._batcher.predict(session.embodiment, session.policy.history) if needs else None
            finally:
                self._in_flight -= 1
            action = session.policy.take(chunk)
        action, outside = self.fleet.clip(session.embodiment, action)  # never beyond what metadata advertises
        self.stats.actions += 1
        if outside:
            self.stats.clipped_actions += 1
            self.stats.clipped_values += outside
        return action

    async def _chunk(self, robot: str, observations: Any, step: Any) -> dict[str, Any]:
        """The chunk predicted at ``step`` from the history those observations complete."""
        session = self._session(robot, streams=True)
        spec = self.fleet.served[session.embodiment].spec
        horizon = spec.observation_horizon
        if not isinstance(observations, list) or not 1 <= len(observations) <= horizon:
            got = f"{len(observations)} of them" if isinstance(observations, list) else type(observations).__name__
            raise ServeError(f"observations: a list of 1 to {horizon} observations (observation_horizon), oldest first; got {got}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ServeError(f"step: the non-negative integer step of the last observation, got {step!r}")
        first = step - len(observations) + 1
        if first < 0:
            raise ServeError(f"step: {len(observations)} observations cannot end at step {step}")
        checked = []
        for i, observation in enumerate(observations):
            try:
                checked.append(self.fleet.check(session.embodiment, observation))
            except ServeError as exc:
                raise ServeError(f"observations[{i}]: {exc}") from None
        async with session.lock:  # the steps are checked against the last under the lock: one request at a time
            if first <= session.last_step:
                raise ServeError(f"step: observations from step {first} repeat steps already received (up to {session.last_step})")
            if session.last_step >= 0 and first != session.last_step + 1 and len(observations) < horizon:
                raise ServeError(f"observations: steps {session.last_step + 1} to {first - 1} are missing; send every step "
                                 f"since the last request, or the last {horizon}")
            session.seen = time.monotonic()
            session.streams = True
            self._in_flight += 1
            try:
                for observation in checked:
                    session.policy.observe(observation)
                session.last_step = step  # in the history now, whatever the prediction does
                chunk = await self._batcher.predict(session.embodiment, session.policy.history)
            finally:
                self._in_flight -= 1
        clipped, _ = self.fleet.clip(session.embodiment, chunk)  # every row within what metadata advertises
        outside = clipped != chunk
        self.stats.chunks += 1
        self.stats.actions += len(chunk)
        self.stats.clipped_actions += int(outside.any(axis=1).sum())
        self.stats.clipped_values += int(outside.sum())
        hz = spec.action.control_hz
        return {"chunk": clipped.astype("float32"), "step": step, "control_hz": hz, "period_s": 1.0 / hz}

    async def _reap(self) -> None:
        """Forget robots silent for longer than the idle timeout."""
        period = max(0.05, self.config.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.config.idle_timeout_s
            for robot in [r for r, s in self.sessions.items() if s.seen < cutoff and not s.lock.locked()]:
                self._forget(robot)
                log.info("robot %s idle for %.0f s: state dropped", robot, self.config.idle_timeout_s)
