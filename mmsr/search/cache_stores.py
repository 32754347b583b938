"""Key-value stores behind the search cache: an SQLite file (default) and Redis (optional).

A store maps a string key to bytes and knows nothing of layers, modes or search. Writes are
atomic: a reader sees either the old value or the whole new one, never half of it, and a
crash mid-write leaves the store as it was. Not here: what is cached and when (``cache.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol


class CacheStore(Protocol):
    """Bytes by string key; ``put`` replaces atomically."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """A dict in this process: for tests and throw-away caches."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(value)

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._data)


class SQLiteStore:
    """One SQLite file in WAL mode, shared safely by many threads and processes.

    Each thread gets its own connection. Every ``put`` is one transaction (SQLite's journal
    makes it all-or-nothing across crashes); concurrent writers wait on SQLite's lock for up
    to ``timeout`` seconds instead of failing.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            conn = self._conn()
            with conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS entries "
                    "(key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL NOT NULL)"
                )
        except sqlite3.DatabaseError as err:  # a text file, a folder, a damaged database
            self.close()
            raise ValueError(f"{self.path}: not a usable SQLite cache file ({err})") from None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            # WAL lets readers run beside one writer; NORMAL sync is crash-safe in WAL mode
            # (a power cut may lose the last commits, never corrupt the file).
            _retry_locked(lambda c=conn: c.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def get(self, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                (key, sqlite3.Binary(value), time.time()),
            )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def _retry_locked(call: Any, attempts: int = 50) -> None:
    """Run ``call`` again while another process holds the lock that switching to WAL needs."""
    for attempt in range(attempts):
        try:
            call()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class RedisStore:
    """Keys in a Redis server, shared by a cluster; ``prefix`` keeps mmsr's keys apart.

    Needs the optional ``redis`` package (``pip install 'mmsr[redis]'``). A ``SET`` is
    atomic in Redis, so readers never see half a value.
    """

    def __init__(self, url: str, *, prefix: str = "mmsr:search:") -> None:
        try:
            import redis
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ValueError("the redis cache store needs the 'redis' package") from err
        self._client = redis.Redis.from_url(url)
        self._prefix = prefix

    def get(self, key: str) -> bytes | None:
        value = self._client.get(self._prefix + key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode("utf-8")

    def put(self, key: str, value: bytes) -> None:
        self._client.set(self._prefix + key, value)

    def close(self) -> None:
        self._client.close()
