"""``mmsr search serve``: run the search service over a local index or any backend config.

    MMSR_SEARCH_TOKEN=secret mmsr search serve --index runs/index --host 0.0.0.0 --port 8000
    MMSR_SEARCH_TOKEN=secret mmsr search serve --config web.json

Backends are built by ``mmsr.search.registry.build_search``; a config file is JSON or TOML.
Without ``MMSR_SEARCH_TOKEN`` the command refuses to start unless ``--insecure-no-auth``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mmsr.cli_types import port_number
from mmsr.search.base import SearchBackends
from mmsr.search.registry import build_search, load_search_config


def register(search_subparsers: Any) -> None:
    parser = search_subparsers.add_parser(
        "serve", help="serve search backends over HTTP (FastAPI + uvicorn)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="a local index folder (mmsr index build)")
    source.add_argument("--config", type=Path, help="a backend config file (.json or .toml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on")
    parser.add_argument("--max-concurrency", type=int, default=8, help="backend calls at once")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    parser.add_argument(
        "--max-body-bytes", type=int, default=8_000_000, help="largest request body (413 above)"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="most pixels a query image decodes to (default 2048x2048; a larger JPEG is decoded "
        "smaller, any other image is refused with 413)",
    )
    parser.add_argument("--max-decodes", type=int, default=2, help="query images decoded at once")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without a bearer token (only on a trusted network)",
    )
    parser.set_defaults(func=_cmd_serve)


def build_backends(config: dict[str, Any]) -> SearchBackends:
    """Backends from the project's registry."""
    return build_search(config)


def _cmd_serve(args: argparse.Namespace) -> int:
    from mmsr.search.service.server import TOKEN_ENV, ServiceConfig, serve

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is None and not args.insecure_no_auth:
        raise ValueError(
            f"set {TOKEN_ENV} to the bearer token clients must send, or pass "
            "--insecure-no-auth to serve without one"
        )
    if args.index is not None:
        if not args.index.is_dir():
            raise ValueError(f"{args.index}: no such index folder")
        config: dict[str, Any] = {"backend": "local", "index": str(args.index)}
    else:
        config = load_search_config(args.config)
    pixels = {} if args.max_image_pixels is None else {"max_image_pixels": args.max_image_pixels}
    limits = ServiceConfig(
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_decodes=args.max_decodes,
        **pixels,
    )
    serve(build_backends(config), host=args.host, port=args.port, token=token, config=limits)
    return 0
