"""Calling paid web APIs politely: retries, back-off, a rate limit, counters and secret hygiene.

``ApiCaller`` wraps one ``httpx.Client`` for one named service ("serpapi", "jina", "llm", …).
It retries on 429, 5xx, timeouts and dropped connections with exponential back-off plus
jitter, honours ``Retry-After``, waits for a token-bucket rate limit, and counts calls,
failures, retries and cost. Every failure leaves as ``SearchError`` whose message names the
service and the status, never a url (query strings carry API keys) nor a key.

This module does not know any API's request or response shape; the engines do.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from mmsr import redact
from mmsr.search.base import SearchError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Secret:
    """An API key that never shows itself in ``repr``/``str`` (so not in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


for _name in ("httpx", "httpcore"):  # they log whole urls, and query strings carry keys
    logging.getLogger(_name).addFilter(redact.LOG_FILTER)


def secret_from_env(env: Mapping[str, str], name: str, *, required: bool = True) -> Secret | None:
    """Reads an API key from the environment variable ``name``; a missing one names the variable."""
    value = env.get(name, "").strip()
    if not value:
        if required:
            raise ValueError(f"environment variable {name} is not set (the API key)")
        return None
    redact.register(value)
    return Secret(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed call."""

    attempts: int = 4
    """Total attempts, the first one included."""
    base_delay_s: float = 0.5
    """Back-off before the 2nd attempt; doubles each time (plus up to 100 % jitter)."""
    max_delay_s: float = 8.0
    """Cap on one back-off wait."""
    max_retry_after_s: float = 30.0
    """A ``Retry-After`` longer than this fails the call at once instead of waiting."""

    def backoff(self, attempt: int) -> float:
        """Wait after failed attempt number ``attempt`` (1-based), with full jitter on top."""
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return float(delay * (1.0 + random.random()))


class RateLimiter:
    """A thread-safe token bucket: at most ``rate`` calls per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Blocks until a call may start; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                pause = (1.0 - self._tokens) / self.rate
            time.sleep(pause)
            waited += pause


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class CallStats:
    """Thread-safe counters of one service: calls, failures, retries, cost, latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {
            "calls": 0,
            "failures": 0,
            "retries": 0,
            "cost_usd": 0.0,
            "seconds": 0.0,
        }

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._counts[name] = self._counts.get(name, 0) + amount

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counts)


class ApiCaller:
    """One service's http calls, with retries, rate limit and counters (see module docstring)."""

    def __init__(
        self,
        service: str,
        client: httpx.Client,
        *,
        retry: RetryPolicy,
        limiter: RateLimiter | None = None,
        cost_per_call_usd: float = 0.0,
        tool: str = "text",
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        detail: Callable[[httpx.Response], str | None] | None = None,
    ) -> None:
        """``detail`` may pull a safe message out of an error response (our own service
        only: third-party error bodies are never echoed)."""
        self.service, self.client, self.retry = service, client, retry
        self.limiter, self.cost_per_call_usd, self.tool = limiter, cost_per_call_usd, tool
        self.retry_statuses, self.detail = retry_statuses, detail
        self.stats = CallStats()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Sends the request until it succeeds (2xx) or the retry policy gives up."""
        for attempt in range(1, self.retry.attempts + 1):
            wait = self._attempt(method, url, attempt, kwargs)
            if isinstance(wait, httpx.Response):
                return wait
            self.stats.add(retries=1)
            time.sleep(wait)
        raise AssertionError("unreachable")  # the last attempt raises instead of returning a wait

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """``request`` and decode a JSON body; a malformed body is a ``SearchError``."""
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            self.stats.add(failures=1)
            raise self._error("returned a malformed JSON body") from None

    def _attempt(
        self, method: str, url: str, attempt: int, kwargs: dict[str, Any]
    ) -> httpx.Response | float:
        """One try: the response on success, else the seconds to wait before the next try."""
        last = attempt >= self.retry.attempts
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.monotonic()
        self.stats.add(calls=1)
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            return self._retry_or_fail("timed out", last, attempt, None)
        except httpx.RequestError as err:
            # The exception text may quote the url; keep only its class name.
            return self._retry_or_fail(f"connection failed ({type(err).__name__})", last, attempt)
        except (httpx.InvalidURL, httpx.StreamError) as err:  # not worth a retry
            self.stats.add(failures=1)
            raise self._error(f"request failed ({type(err).__name__})") from None
        finally:
            self.stats.add(seconds=time.monotonic() - started)
        if response.is_success:
            self.stats.add(cost_usd=self.cost_per_call_usd)  # the APIs bill successful calls
            return response
        status = response.status_code
        what = f"answered HTTP {status}"
        extra = self.detail(response) if self.detail is not None else None
        if extra:
            what += f": {extra}"
        if status in self.retry_statuses:
            after = parse_retry_after(response.headers.get("retry-after"))
            return self._retry_or_fail(what, last, attempt, after)
        self.stats.add(failures=1)
        raise self._error(what)

    def _retry_or_fail(
        self, what: str, last: bool, attempt: int, retry_after: float | None = None
    ) -> float:
        if retry_after is not None and retry_after > self.retry.max_retry_after_s:
            last = True
            what += f" (Retry-After {retry_after:.0f} s is too long)"
        if last:
            self.stats.add(failures=1)
            raise self._error(what, retryable=True)
        wait = self.retry.backoff(attempt)
        if retry_after is not None:
            wait = max(wait, retry_after)
        logger.debug("%s %s; retrying in %.2f s", self.service, what, wait)
        return wait

    def _error(self, what: str, *, retryable: bool = False) -> SearchError:
        return SearchError(f"{self.service} {what}", tool=self.tool, retryable=retryable)


def make_client(
    *,
    timeout_s: float,
    trust_env: bool,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """An httpx client for API calls: one timeout for connect, read, write and pool, and no
    redirects (an API that redirects is misconfigured)."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s), trust_env=trust_env, headers=dict(headers or {})
    )
