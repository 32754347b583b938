"""argparse types that command modules share (``type=port_number``).

Below every package, so that any ``cli`` module may use them without importing the ``mmsr``
command itself (``mmsr.cli``, which names every command module). Not here: the commands.
"""

from __future__ import annotations

import argparse


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (a bad one is argparse's usage error)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port
