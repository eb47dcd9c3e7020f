"""A minimal Faust app for tests/integration/test_faust_echo.py; not imported by pytest.

It reads JSON events from FB_ECHO_IN and writes each one, tagged, to FB_ECHO_OUT.
Run as a worker subprocess:

    FB_ECHO_BROKER=kafka://127.0.0.1:9092 FB_ECHO_APP_ID=echo-1 FB_ECHO_IN=a FB_ECHO_OUT=b \
        python tests/integration/faust_echo_app.py --loop uvloop --datadir /tmp/echo worker --without-web

`--loop uvloop` is read by `import faust` itself, which installs uvloop's event
loop policy before anything else runs; each echoed event reports the loop that
handled it so the test can check.
"""

from __future__ import annotations

import asyncio
import os

import faust
import orjson

app = faust.App(
    os.environ["FB_ECHO_APP_ID"],
    broker=os.environ["FB_ECHO_BROKER"],
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_partitions=1,  # for Faust's own internal topics
    producer_acks=-1,
)

source = app.topic(os.environ["FB_ECHO_IN"], key_type=bytes, value_type=bytes, value_serializer="raw")
sink = app.topic(os.environ["FB_ECHO_OUT"], key_type=bytes, value_type=bytes, value_serializer="raw")


@app.agent(source, concurrency=1)
async def echo(stream):
    loop_impl = type(asyncio.get_running_loop()).__module__.split(".")[0]
    async for key, raw in stream.items():
        event = orjson.loads(raw)
        event["echoed_by"] = app.conf.id
        event["loop"] = loop_impl
        await sink.send(key=key, value=orjson.dumps(event))


if __name__ == "__main__":
    app.main()
