"""A `slack_bot` target: one Slack thread per case (chat.postMessage), against a local
Slack-shaped HTTP server; the incoming-webhook `slack` target unchanged beside it (issue 25)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from firebreak.adapters.notify import NotifyConfigError, load_notify_config, notify_records
from firebreak.cli import main

RULES = """\
rule attackers: rate(prompt_injection) > 0.2 over 5m by user min 10 events -> sev2 contain block_user
rule leak: rate(pii) > 0.005 over 10m by tenant min 50 events -> sev2
"""
TOKEN = "xoxb-test-token"


class SlackApi:
    """chat.postMessage as Slack answers it: HTTP 200 and ``ok``; a new message gets a fresh
    ``ts``; a reply must name the ``ts`` of a message it gave (else ``thread_not_found``); a
    wrong token is ``invalid_auth``."""

    def __init__(self) -> None:
        self.messages: list[dict] = []  # every accepted message, with the ts it got
        self.webhook: list[dict] = []  # what the incoming-webhook target posted
        self.refusals: list[str] = []

    async def post_message(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.refusals.append("invalid_auth")
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = await request.json()
        if not body.get("channel") or not body.get("text"):
            return web.json_response({"ok": False, "error": "no_text"})
        if "thread_ts" in body and body["thread_ts"] not in {m["ts"] for m in self.messages}:
            self.refusals.append("thread_not_found")
            return web.json_response({"ok": False, "error": "thread_not_found"})
        ts = f"1700000000.{len(self.messages) + 1:06d}"
        self.messages.append({**body, "ts": ts})
        return web.json_response({"ok": True, "channel": "C0123", "ts": ts})

    async def incoming_webhook(self, request: web.Request) -> web.Response:
        self.webhook.append(await request.json())
        return web.Response(text="ok")


def _config(tmp_path: Path, url: str, token_env: str = "TEST_SLACK_TOKEN") -> str:
    path = tmp_path / "notify.toml"
    path.write_text(f"""
default_targets = ["#oncall-bot", "#chat"]

[targets."#oncall-bot"]
kind = "slack_bot"
url = "{url}/api/chat.postMessage"
token_env = "{token_env}"
channel = "#ai-oncall"
backoff_s = 0.01

[targets."#chat"]
kind = "slack"
url = "{url}/hook"
backoff_s = 0.01
""")
    return str(path)


def _run(tmp_path: Path, api: SlackApi, records: list[dict], env: dict[str, str]):
    async def go():
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", api.post_message)
        app.router.add_post("/hook", api.incoming_webhook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
        try:
            return await notify_records(load_notify_config(_config(tmp_path, url), env=env), records)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("demo")
    (out / "demo.rules").write_text(RULES)
    assert main(["demo", "--rules", str(out / "demo.rules"), "--out", str(out), "--rate", "1", "--quiet"]) == 0
    return [orjson.loads(line) for line in (out / "records.jsonl").read_bytes().splitlines()]


def test_one_thread_per_case_opened_replied_to_and_resolved(tmp_path: Path, records: list[dict]) -> None:
    api = SlackApi()
    stats = _run(tmp_path, api, records, {"TEST_SLACK_TOKEN": TOKEN})
    assert api.refusals == []
    case_records = [r for r in records if r["type"].startswith("case.")]
    cases = [r["case_id"] for r in case_records if r["type"] == "case.opened"]
    assert len(cases) >= 2 and any(r["type"] == "case.updated" for r in case_records)
    assert len(api.messages) == len(case_records)  # one message per case record, in order
    assert stats.delivered["#oncall-bot"] == len(case_records)
    firsts = [m for m in api.messages if "thread_ts" not in m]
    assert len(firsts) == len(cases)  # one top-level message per case: its opening
    for first, case_id in zip(firsts, cases, strict=True):
        assert f"--case {case_id}" in first["text"] and first["channel"] == "#ai-oncall"
        mine = [r for r in case_records if r["case_id"] == case_id]
        replies = [m for m in api.messages if m.get("thread_ts") == first["ts"]]
        assert len(replies) == len(mine) - 1  # every later record of the case, in its thread
        for record, reply in zip(mine[1:], replies, strict=True):
            assert record["incident_id"] in reply["text"]
            if record["type"] == "case.updated" and record["reason"] == "joined":
                assert "joined the case" in reply["text"]
        if mine[-1]["type"] == "case.resolved":
            assert replies[-1]["text"].startswith("resolved")
    # the incoming-webhook target is unchanged: a message per incident record
    assert len(api.webhook) == sum(1 for r in records if r["type"].startswith("incident."))
    assert all("thread_ts" not in m and "text" in m for m in api.webhook)


def test_a_refused_token_is_counted_not_retried_and_not_a_traceback(tmp_path: Path, records: list[dict]) -> None:
    api = SlackApi()
    stats = _run(tmp_path, api, records, {"TEST_SLACK_TOKEN": "xoxb-wrong"})
    case_records = [r for r in records if r["type"].startswith("case.")]
    assert api.messages == [] and len(api.refusals) == len(case_records)
    assert stats.refused["#oncall-bot"] == len(case_records) and stats.delivered["#oncall-bot"] == 0
    assert stats.retries == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('kind = "slack_bot"\nchannel = "#x"', "needs token_env"),
        ('kind = "slack_bot"\ntoken_env = "T"', "needs channel"),
        ('kind = "slack"\nurl = "https://h.example/x"\nchannel = "#x"', "are for slack_bot targets"),
    ],
)
def test_slack_bot_config_mistakes_are_one_line(tmp_path: Path, spec: str, message: str) -> None:
    path = tmp_path / "n.toml"
    path.write_text(f'[targets."#t"]\n{spec}\n')
    with pytest.raises(NotifyConfigError, match=message) as error:
        load_notify_config(str(path), env={"T": TOKEN})
    assert "\n" not in str(error.value)


def test_slack_bot_defaults_to_slacks_api_url(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('[targets."#t"]\nkind = "slack_bot"\ntoken_env = "T"\nchannel = "C1"\n')
    target = load_notify_config(str(path), env={"T": TOKEN}).targets["#t"]
    assert target.url.value == "https://slack.com/api/chat.postMessage" and TOKEN not in repr(target)
