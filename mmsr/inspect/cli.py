"""``mmsr inspect RUN_DIR [RUN_DIR ...]``: read trajectories in a browser.

    mmsr inspect runs/demo/eval/on_demand_warmstart runs/demo/eval/on_demand_rl
    mmsr inspect runs/grpo            # a training folder: its samples/step_*/
    mmsr inspect runs/demo/eval       # every run one level down

Serves on 127.0.0.1 (this machine only) unless ``--host`` says otherwise; stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from mmsr.cli_types import port_number
from mmsr.inspect import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    import uvicorn

    from mmsr.inspect.store import Store

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect", help="read trajectories of run folders in a browser (a local web app)"
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="a folder with trajectories.jsonl, a GRPO run (samples/step_*/), or a folder of those",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s, this machine only)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help="port to listen on (default: %(default)s)",
    )
    p.set_defaults(func=_cmd_inspect)


def allowed_hosts(host: str) -> list[str]:
    """The Host names the app answers when bound to ``host``: loopback names, plus the
    address itself; any name when bound to every interface."""
    from mmsr.inspect.app import LOOPBACK_NAMES

    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return list(dict.fromkeys([*LOOPBACK_NAMES, host]))


def make_server(store: Store, host: str, port: int) -> uvicorn.Server:
    """The uvicorn server of the app over ``store`` (``run()`` serves until interrupted)."""
    import uvicorn

    from mmsr.inspect.app import create_app

    app = create_app(store, allowed_hosts=allowed_hosts(host))
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))


def _cmd_inspect(args: argparse.Namespace) -> int:
    from mmsr.inspect.store import Store

    store = Store(args.run_dirs)
    runs, trainings = store.discover()
    logger.info("serving %d runs and %d training folders", len(runs), len(trainings))
    print(f"mmsr inspect: http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    make_server(store, args.host, args.port).run()
    return 0
