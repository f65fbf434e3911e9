"""A robot's side of ``hpt-kit serve``: :class:`PolicyClient` is a ``Controller`` (``reset`` and
``act``), so every rollout runner, and a robot's own control loop, drives a served policy exactly as
an in-process :class:`~hpt_kit.policy.Policy`. It needs numpy, msgpack and websockets, not torch.

    client = PolicyClient("ws://127.0.0.1:8765", "mujoco-arm3", token=os.environ.get("HPT_KIT_TOKEN"))
    client.reset()
    action = client.act({"state": state})
"""

from __future__ import annotations

import itertools
import os
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
