"""EVALSHA on plain redis-py connections, past the client's pool. No Django.

A request thread's admission is one ``EVALSHA``; through ``redis.Redis`` and a
registered ``Script`` it also pays the pool's lock and bookkeeping, the retry
wrapper and the observability hooks, about a quarter of the client's CPU per
call here (``python -m bench.cluster_cost``). :class:`Calls` keeps idle
connections in a list (``pop``/``append`` are atomic), so a thread takes one,
sends, reads and puts it back: as many connections as calls at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any


class Calls:
    def __init__(self, client: Any, scripts: dict[str, str]) -> None:
        pool = client.connection_pool
        self._make: Callable[[], Any] = lambda: pool.connection_class(**pool.connection_kwargs)
        self._text = scripts
        self._sha = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in scripts.items()
        }
        self._idle: list[Any] = []

    def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name``; redis-py's errors (``redis.RedisError``) pass through."""
        import redis

        try:
            conn, reused = self._idle.pop(), True
        except IndexError:
            conn, reused = self._make(), False
        try:
            try:
                reply = self._run(conn, name, keys, args)
            except redis.exceptions.ConnectionError:
                if not reused:
                    raise
                # Closed while idle (the server's idle timeout, a restart): once more,
                # on a new connection. Every script is idempotent (a lease id is
                # added or removed once), so a first attempt that did run is harmless.
                # A timeout is not retried: an admission decides within one.
                conn.disconnect()
                reply = self._run(conn, name, keys, args)
        except redis.exceptions.ResponseError:
            self._idle.append(conn)  # the connection itself is fine
            raise
        except BaseException:
            conn.disconnect()  # a reply may still be on its way: never reuse it
            raise
        self._idle.append(conn)
        return reply

    def _run(self, conn: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        import redis

        try:
            conn.send_command("EVALSHA", self._sha[name], len(keys), *keys, *args)
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # a new or restarted Redis: once
            conn.send_command("EVAL", self._text[name], len(keys), *keys, *args)
            return conn.read_response()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()
