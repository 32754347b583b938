"""Secret redaction, in one place: what must never reach a log line, an error or a saved file.

Three kinds of secret are masked as ``***``: API keys registered at run time (``register``;
``mmsr.search.transport.secret_from_env`` registers every key it reads), the user:password
part of urls, and, in settings, the values of entries whose key names a secret ("api_key",
"token", …). ``LOG_FILTER`` does the same to the records of loggers it is added to. Not here:
reading keys, nor deciding which loggers to filter (their owners do).
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
SECRET_WORDS = ("key", "token", "secret", "password")
_USERINFO = re.compile(r"//[^/@\s]+@")
_SECRETS: set[str] = set()


def register(secret: str) -> None:
    """Mask ``secret`` wherever ``redact`` or ``LOG_FILTER`` meets it from now on."""
    if secret:
        _SECRETS.add(secret)


def redact(value: Any) -> Any:
    """``value`` without secrets: in text, registered secrets and a url's user:password; in a
    dict, also every value whose key names a secret; lists item by item; others as they are.

    >>> redact({"url": "https://me:pw@host/v1", "api_key": "sk-1", "n": 3})
    {'url': 'https://***@host/v1', 'api_key': '***', 'n': 3}
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: MASK if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_text(text: str) -> str:
    """``text`` with every registered secret and a url's user:password part masked."""
    for secret in tuple(_SECRETS):  # a copy: another thread may register one meanwhile
        text = text.replace(secret, MASK)
    return _USERINFO.sub(f"//{MASK}@", text)


class _RedactRecords(logging.Filter):
    """Masks secrets in a log record's message (the http libraries log whole urls)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = redact_text(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


LOG_FILTER = _RedactRecords()
