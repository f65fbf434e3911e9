"""A robot's side of ``hpt-kit serve``: :class:`PolicyClient` is a ``Controller`` (``reset`` and
``act``), so every rollout runner, and a robot's own control loop, drives a served policy exactly as
an in-process :class:`~hpt_kit.policy.Policy`. It needs numpy, msgpack and websockets, not torch.

    client = PolicyClient("ws://127.0.0.1:8765", "mujoco-arm3", token=os.environ.get("HPT_KIT_TOKEN"))
    client.reset()
    action = client.act({"state": state})

:class:`ChunkStream` wraps a client for robots whose network round trip is a sizeable part of a
control period: it receives whole chunks and asks for the next while the robot executes the current
one, so ``act`` answers from memory whenever a received chunk covers the step.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpt_kit.core.wire import decode, encode

TOKEN_ENV = "HPT_KIT_TOKEN"


class ServerError(RuntimeError):
    """The server refused a request; the message is its one-line reason (naming the field)."""


class PolicyClient:
    def __init__(
        self,
        url: str,
        embodiment: str | None = None,
        robot_id: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = 16 * 2**20,
    ):
        """``embodiment`` defaults to the server's first; ``robot_id`` to a fresh unique name;
        ``token`` to $HPT_KIT_TOKEN."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self._connection = connect(
                url, additional_headers=headers, max_size=max_message_bytes, open_timeout=timeout, compression=None
            )  # no per-message deflate: it costs more time than it saves on a robot's network
        except InvalidStatus as exc:
            if exc.response.status_code != 401:
                raise ServerError(f"{url} refused the connection: HTTP {exc.response.status_code}") from None
            sent = "the token sent was refused" if token else "no token was sent"
            raise ServerError(
                f"{url} refused the connection (HTTP 401): it requires the token it was started with "
                f"(serve --token or {TOKEN_ENV}); {sent}; "
                f"set {TOKEN_ENV} to it here, or pass token= to PolicyClient"
            ) from None
        self._ws = self._connection.__enter__()  # websockets asks for its context manager: held until close()
        self._timeout = timeout
        self._ids = itertools.count()
        self.url = url
        self.metadata = self.call("metadata")
        self.embodiment = embodiment or next(iter(self.metadata["embodiments"]))
        if self.embodiment not in self.metadata["embodiments"]:
            raise ServerError(f"{url} serves {', '.join(self.metadata['embodiments'])}, not {self.embodiment!r}")
        self.robot_id = robot_id or f"{self.embodiment}-{uuid.uuid4().hex[:8]}"
        self._reset_done = False

    @property
    def needs_images(self) -> bool:
        """Whether ``act`` needs rendered camera frames (``RolloutRequest(render=True)``)."""
        return "image" in self.metadata["embodiments"][self.embodiment]["observation"]

    def call(self, op: str, **fields: Any) -> Any:
        """One request and its reply's result; a refusal raises :class:`ServerError`."""
        ident = next(self._ids)
        self._ws.send(encode({"op": op, "id": ident, **fields}))
        reply = decode(self._ws.recv(timeout=self._timeout))
        if reply.get("id") != ident:
            raise ServerError(f"reply {reply.get('id')!r} to request {ident}: the connection is out of step")
        if not reply.get("ok"):
            raise ServerError(reply.get("error", "refused"))
        return reply.get("result")

    def reset(self) -> None:
        self.call("reset", robot=self.robot_id, embodiment=self.embodiment)
        self._reset_done = True

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if not self._reset_done:
            self.reset()
        return np.asarray(self.call("act", robot=self.robot_id, observation=dict(observation))["action"])

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ChunkStream:
    """A :class:`PolicyClient` streaming chunks: a ``Controller`` whose ``act`` rarely waits on the network.

    Each request carries the observations of the steps since the last one (at most the embodiment's
    ``observation_horizon``) and the step index of the newest; the reply is the chunk the server
    predicted from them, every row clipped to the advertised bounds, with that step ``s``. Row i is
    the action for step ``s + i``: chunks are aligned by step index, never by arrival time, so rows
    for steps already executed while the chunk was on its way are dropped. A request goes out, from
    a thread of its own, whenever none is in flight and ``replan_every`` steps have passed since the
    last; ``act`` waits only when no received chunk covers its step (the first step of an episode,
    or a round trip longer than what the chunks cover), and counts those steps in ``waits``.

    Blending: every received chunk that covers step t predicts an action for it. ``ensemble=m``
    (default 0.01, ACT's) executes their weighted mean, chunks ordered oldest first and chunk i
    weighing ``exp(-m * i)``, as in-process temporal ensembling does; ``ensemble=None`` executes the
    newest chunk's row alone. A blend of clipped rows lies within the bounds; it is clipped again
    against float rounding. The server's own chunk execution (``--execute-steps``,
    ``--temporal-ensemble``) does not apply to streamed chunks: this side decides.

    A refusal (a wrong observation, a lost session) is raised as :class:`ServerError` by the next
    ``act``. ``close`` stops the thread and closes the client.
    """

    def __init__(self, client: PolicyClient, ensemble: float | None = 0.01, replan_every: int = 1):
        protocol = client.metadata.get("protocol", 1)
        if protocol < 2:
            raise ServerError(f"{client.url} speaks protocol {protocol}; streaming chunks needs protocol 2 (a newer hpt-kit serve)")
        if ensemble is not None and not (np.isfinite(ensemble) and ensemble >= 0):
            raise ValueError(f"ensemble: a finite m >= 0 or None, got {ensemble}")
        if replan_every < 1:
            raise ValueError(f"replan_every: at least 1 step, got {replan_every}")
        served = client.metadata["embodiments"][client.embodiment]
        self.client, self.ensemble, self.replan_every = client, ensemble, replan_every
        self.observation_horizon = int(served["spec"]["observation_horizon"])
        self.action_horizon = int(served["spec"]["head"]["action_horizon"])
        self.period_s = 1.0 / float(served["control_hz"])
        self._low = np.asarray(served["action_low"], np.float32)
        self._high = np.asarray(served["action_high"], np.float32)
        self._requests: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve_requests, name=f"chunks-{client.robot_id}", daemon=True)
        self._thread.start()
        self._in_flight = False
        self._reset_done = False
        self.waits = self.chunks_received = 0
        self._clear()

    @property
    def needs_images(self) -> bool:
        return self.client.needs_images

    def reset(self) -> None:
        self._collect(block=True)  # the connection is this thread's again
        self.client.reset()
        self._clear()
        self._reset_done = True

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if not self._reset_done:
            self.reset()
        t = self._step
        self._observed.append((t, dict(observation)))
        del self._observed[: -self.observation_horizon]
        self._collect(block=False)
        if not self._covers(t):
            self.waits += 1
            while not self._covers(t):
                if not self._in_flight:
                    self._send(t)
                self._collect(block=True)
        elif not self._in_flight and t - self._last_request >= self.replan_every:
            self._send(t)
        action = self._blend(t)
        self._step += 1
        self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self._step]  # still covering a step to come
        return action

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(self.client._timeout)
        self.client.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _clear(self) -> None:
        self._step = 0
        self._observed: list[tuple[int, dict]] = []  # (step, observation): the last observation_horizon
        self._sent_through = -1  # the newest step whose observation the server has
        self._last_request = -self.replan_every
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step predicted for, (K, A)), oldest first

    def _send(self, t: int) -> None:
        new = [o for s, o in self._observed if s > self._sent_through]
        self._requests.put((t, new))
        self._sent_through = self._last_request = t
        self._in_flight = True

    def _collect(self, block: bool) -> None:
        """Take the reply in flight, if there is one (waiting for it when ``block``)."""
        if not self._in_flight:
            return
        try:
            result, error = self._replies.get(timeout=self.client._timeout) if block else self._replies.get_nowait()
        except queue.Empty:
            if block:
                raise ServerError(f"{self.client.url}: no chunk within {self.client._timeout:g} s") from None
            return
        self._in_flight = False
        if error is not None:
            raise error
        self._chunks.append((int(result["step"]), np.asarray(result["chunk"], np.float32)))
        self.chunks_received += 1

    def _covers(self, t: int) -> bool:
        return any(s <= t < s + len(c) for s, c in self._chunks)

    def _blend(self, t: int) -> np.ndarray:
        rows = np.stack([c[t - s] for s, c in self._chunks if s <= t < s + len(c)])  # (n, A), oldest first
        if self.ensemble is None:
            action = rows[-1]
        else:
            weights = np.exp(-self.ensemble * np.arange(len(rows)))  # (n,): the oldest weighs most for m > 0
            action = weights @ rows / weights.sum()
        return np.clip(action, self._low, self._high).astype(np.float32)

    def _serve_requests(self) -> None:
        """The requests' thread: one chunk request at a time over the client's connection."""
        while (request := self._requests.get()) is not None:
            step, observations = request
            try:
                self._replies.put((self.client.call("chunk", robot=self.client.robot_id, observations=observations, step=step), None))
            except Exception as exc:  # noqa: BLE001 - handed to the robot's thread, raised by its next act
                self._replies.put((None, exc if isinstance(exc, ServerError) else ServerError(f"{self.client.url}: {exc}")))
