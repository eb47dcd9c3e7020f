"""A real HTTP endpoint on 127.0.0.1 for notify tests (unit and Kafka): records what it receives."""

from __future__ import annotations

import asyncio

from aiohttp import web


class Receiver:
    """An HTTP endpoint that records each request and answers from a script of behaviours."""

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[dict] = []
        self.headers: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        behaviour = self.script.pop(0) if self.script else "ok"
        self.received.append({"path": request.path, "body": body, "behaviour": behaviour})
        self.headers.append(dict(request.headers))
        if behaviour == "slow":
            await asyncio.sleep(2)  # past the target's 1 s timeout
        if behaviour == "500":
            return web.Response(status=500, text="upstream trouble")
        if behaviour == "400":
            return web.json_response({"status": "invalid event", "errors": ["routing_key is wrong"]}, status=400)
        return web.json_response({"status": "success"}, status=202)


async def serve(receiver: Receiver):
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}"


def config_file(tmp_path, url: str, extra: str = "") -> str:
    path = tmp_path / "notify.toml"
    path.write_text(f"""
default_targets = ["#ai-oncall"]

[targets."#ai-oncall"]
kind = "pagerduty"
url = "{url}/v2/enqueue"
routing_key_env = "TEST_PD_KEY"
backoff_s = 0.01
timeout_s = 1
{extra}

[targets."#chat"]
kind = "slack"
url_env = "TEST_SLACK_URL"
backoff_s = 0.01
""")
    return str(path)


ENV = {"TEST_PD_KEY": "R0UTINGKEY", "TEST_SLACK_URL": ""}
