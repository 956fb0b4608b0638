"""The framework ceiling: a minimal Litestar app with one POST route returning a
small JSON, served by uvicorn exactly as `rotor serve` serves Rotor (same
options, same worker count). Whatever Rotor does costs on top of this."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from litestar import Litestar, Request, post


@post("/", status_code=200)
async def answer(request: Request[Any, Any, Any]) -> dict[str, object]:
    # Read the body, as Rotor's handlers do, and answer a small JSON object.
    body = await request.body()
    return {"ok": True, "received": len(body)}


app = Litestar(route_handlers=[answer], debug=False, logging_config=None, openapi_config=None)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="bench.minimal_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    # The same uvicorn options as service/cli.py's `rotor serve`.
    uvicorn.run(
        "bench.minimal_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        loop="auto",
        http="auto",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
