"""``mmsr inspect``: a local, read-only web app for reading trajectories in a browser.

It serves run folders — ``mmsr eval`` runs, ``mmsr rollout`` output, GRPO training folders
(``samples/step_N/``) — as a list with filters, a trajectory view, side by side runs and a
training view. The pieces: ``store`` reads the files (and never writes them), ``rows`` and
``views`` turn records into what the pages show (pure functions), ``app`` is the FastAPI app,
``static/`` the page (plain JavaScript and CSS shipped in the package: no CDN, works offline).

What it is not: a dashboard of aggregates (that is ``mmsr report``), or anything that edits a
run. Importing this package is cheap; FastAPI is loaded by ``mmsr.inspect.app`` only.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def inspect_command(run_dirs: Sequence[str | Path], *, port: int = DEFAULT_PORT) -> str:
    """The shell command line that opens ``run_dirs`` in the inspector.

    >>> inspect_command(["runs/demo/eval/rag", "runs/my run"])
    "mmsr inspect runs/demo/eval/rag 'runs/my run'"
    """
    port_args = [] if port == DEFAULT_PORT else ["--port", str(port)]
    return shlex.join(["mmsr", "inspect", *map(str, run_dirs), *port_args])


def inspector_link(run_dirs: Sequence[str | Path], *, port: int = DEFAULT_PORT) -> str:
    """A link that opens these runs (one: its list; several: side by side) in an inspector
    running on this machine that serves them; paths are matched after resolving them.

    >>> inspector_link(["/r/a"])
    'http://127.0.0.1:8765/#/open?path=%2Fr%2Fa'
    """
    query = urlencode([("path", str(Path(d).resolve())) for d in run_dirs])
    return f"http://{DEFAULT_HOST}:{port}/#/open?{query}"
