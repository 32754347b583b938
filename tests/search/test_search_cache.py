"""The search cache: modes, counters, stores (SQLite across processes, Redis) and wrappers.

Its config (``CacheConfig``) is tested with the other search configs in ``test_search_configs``.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mmsr.search.base import SearchError
from mmsr.search.cache import (
    CacheConfig,
    CachedImageSearch,
    CachedTextSearch,
    SearchCache,
    open_cache,
)
from mmsr.search.cache_stores import MemoryStore, RedisStore, SQLiteStore
from mmsr.types import ImageHit, TextHit

# mode, whether the 1st and 2nd identical calls compute, and whether a stored value is read.
MODE_CASES = [
    # off: compute every time, store nothing
    ("off", [True, True], 0),
    # read-write: compute once, then read the stored value
    ("read-write", [True, False], 1),
    # record: compute every time and (re)store
    ("record", [True, True], 1),
]


@pytest.mark.parametrize(("mode", "computes", "stored"), MODE_CASES)
def test_modes_compute_and_store(mode: str, computes: list[bool], stored: int) -> None:
    store = MemoryStore()
    cache = SearchCache(store if mode != "off" else None, mode)
    calls: list[int] = []
    for expected in computes:
        before = len(calls)
        value = cache.get_or_compute("text", "q", lambda: calls.append(1) or {"v": len(calls)})
        assert (len(calls) > before) is expected
        assert value == {"v": len(calls)}
    assert len(store) == stored


def test_replay_reads_recordings_and_refuses_misses() -> None:
    store = MemoryStore()
    SearchCache(store, "record").get_or_compute("page", "https://a", lambda: "text of a")
    replay = SearchCache(store, "replay")
    assert (
        replay.get_or_compute("page", "https://a", lambda: pytest.fail("computed")) == "text of a"
    )
    with pytest.raises(SearchError, match="replay mode") as info:
        replay.get_or_compute("image", "unseen", lambda: pytest.fail("computed"))
    assert info.value.tool == "image"


def test_counters_count_hits_misses_and_latency() -> None:
    cache = SearchCache(MemoryStore(), "read-write")
    for key in ["a", "b", "a", "a"]:
        cache.get_or_compute("text", key, lambda: [1, 2])
    stats = cache.stats()
    assert (stats["cache/hits"], stats["cache/misses"]) == (2, 2)
    assert stats["cache/text/hits"] == 2
    assert stats["cache/hit_ms_mean"] > 0 and stats["cache/miss_ms_mean"] > 0


def test_stored_keys_and_values_hold_no_query_or_secret(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.sqlite")
    cache = SearchCache(store, "read-write")
    cache.get_or_compute("text", "query with sk-SECRET123", lambda: {"ok": True})
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("c.sqlite*"))
    assert b"SECRET123" not in raw and b"ok" in raw


class _FakeText:
    def __init__(self) -> None:
        self.calls = 0

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        self.calls += 1
        return [TextHit(title=f"{query}-{i}", url=f"u{i}", summary=str(question)) for i in range(k)]


class _FakeImage:
    def __init__(self) -> None:
        self.calls = 0

    def search(self, image: object, k: int) -> list[ImageHit]:
        self.calls += 1
        thumb = Image.new("RGB", (8, 6), (10, 200, 30))
        return [ImageHit(title="t", url="u", thumbnail=thumb), ImageHit(title="n", url="v")]


def test_text_wrapper_keys_on_query_k_and_question() -> None:
    inner = _FakeText()
    cached = CachedTextSearch(inner, SearchCache(MemoryStore()), namespace="ns")
    first = cached.search("q", 2, "why")
    assert cached.search("q", 2, "why") == first and inner.calls == 1
    cached.search("q", 2, "how")  # another question is another entry
    cached.search("q", 3, "why")  # and so is another k
    assert inner.calls == 3


def test_image_wrapper_stores_thumbnails_as_images() -> None:
    inner = _FakeImage()
    cached = CachedImageSearch(inner, SearchCache(MemoryStore()), namespace="ns")
    query = Image.new("RGB", (20, 20), (1, 2, 3))
    cached.search(query, 2)
    again = cached.search(query.copy(), 2)
    assert inner.calls == 1
    assert again[0].thumbnail.size == (8, 6)
    assert again[0].thumbnail.convert("RGB").getpixel((0, 0)) == (10, 200, 30)
    assert again[1].thumbnail is None
    cached.search(Image.new("RGB", (20, 20), (1, 2, 4)), 2)  # one pixel value differs
    assert inner.calls == 2


def _writer(path: str, worker: int, count: int) -> None:
    store = SQLiteStore(path)
    for i in range(count):
        store.put(f"w{worker}:{i}", json.dumps({"worker": worker, "i": i}).encode())
    store.close()


def test_sqlite_store_takes_concurrent_writers_from_many_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, w, 60)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    store = SQLiteStore(path)
    assert len(store) == 240
    assert json.loads(store.get("w3:59") or b"") == {"worker": 3, "i": 59}


_KILLED_WRITER = """
import sys
from mmsr.search.cache_stores import SQLiteStore
store = SQLiteStore(sys.argv[1])
i = 0
while True:
    store.put(f"k{i % 50}", (str(i % 10) * 200_000).encode())
    i += 1
    if i == 5:
        print("writing", flush=True)
"""


def test_sqlite_store_has_no_half_written_value_after_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    store = SQLiteStore(path)
    values = [store.get(f"k{i}") for i in range(50)]
    present = [v for v in values if v is not None]
    assert len(present) >= 5
    for value in present:  # each value whole: 200,000 copies of one digit
        assert len(value) == 200_000 and len(set(value)) == 1


_REPLAY_CHILD = """
import json, sys
from mmsr.search.registry import build_search
config = json.loads(sys.argv[1])
text = build_search(config).text
hits = text.search("banana fruit", 2, "what grows in clusters?")
print(json.dumps([[h.title, h.url, h.summary] for h in hits]))
"""


def test_replay_in_another_process_gives_identical_hits(local_index: Path, tmp_path: Path) -> None:
    cache_path = str(tmp_path / "frozen.sqlite")

    def config(mode: str) -> str:
        cache = {"mode": mode, "path": cache_path}
        return json.dumps({"backend": "local", "index": str(local_index), "cache": cache})

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-c", _REPLAY_CHILD, config(mode)]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    recorded = run("record")
    assert recorded.returncode == 0, recorded.stderr
    replayed = run("replay")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == json.loads(recorded.stdout)
    assert json.loads(recorded.stdout)[0][0] == "Banana"
    # the replayed cache has only what was recorded
    replay = open_cache(CacheConfig(mode="replay", path=cache_path))
    with pytest.raises(SearchError):
        CachedTextSearch(_FakeText(), replay, namespace="x").search("banana fruit", 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make setup installs it as root)")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp_path]
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_store_serves_the_cache(redis_url: str) -> None:
    cache = open_cache(CacheConfig(store="redis", url=redis_url, mode="read-write"))
    assert isinstance(cache.store, RedisStore)
    inner = _FakeText()
    cached = CachedTextSearch(inner, cache, namespace="r")
    assert cached.search("q", 2) == cached.search("q", 2)
    assert inner.calls == 1
    other_client = open_cache(CacheConfig(store="redis", url=redis_url, mode="replay"))
    replayed = CachedTextSearch(_FakeText(), other_client, namespace="r").search("q", 2)
    assert [h.title for h in replayed] == ["q-0", "q-1"]


def test_off_mode_needs_no_store_and_stores_nothing() -> None:
    cache = open_cache(CacheConfig(mode="off"))  # no path needed
    assert cache.store is None
    assert cache.get_or_compute("text", "k", lambda: 1) == 1


def test_sqlite_store_serves_many_threads_of_one_process(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = SearchCache(SQLiteStore(tmp_path / "threads.sqlite"), "read-write")

    def work(worker: int) -> list[int]:
        return [cache.get_or_compute("t", f"{i % 20}", lambda i=i: i % 20) for i in range(50)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert all(result == [i % 20 for i in range(50)] for result in results)
    stats = cache.stats()
    assert stats["cache/hits"] + stats["cache/misses"] == 400 and stats["cache/hits"] >= 240
