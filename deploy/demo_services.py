"""Serve the demo downstream services (`studio` and `core`) for the compose stack.

`blobflow.devtools.demo` has no `__main__` block, so this runs its `demo_app()` with
`aiohttp.web.run_app`, plus a `/healthz` route for the container health check.
Demo only: state is kept in memory and answers are made up (see service/blobflow/devtools/demo.py).

    python demo_services.py [--host 0.0.0.0] [--port 8000]
"""

from __future__ import annotations

import argparse

from aiohttp import web

from blobflow.devtools.demo import demo_app


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description="blobflow demo downstream services")
    # All interfaces: blobflow reaches it from other containers.
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = demo_app()
    app.router.add_get("/healthz", _healthz)
    # run_app stops cleanly on SIGTERM (docker stop) and SIGINT.
    web.run_app(app, host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
