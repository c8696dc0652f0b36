"""WebSocket clients for ``manage.py bench_ws`` (run as a separate process so
that they do not share an interpreter with the order injector).

``python -m exchange.live.bench_client CONFIG.json OUT.json``: CONFIG holds
the URL, the symbol, the measured traders' API keys and the number of idle
subscribers. The process connects everything, prints ``ready``, and records
until its standard input closes, then writes OUT:

- ``orders``: {order id: [receive time (s since epoch), the order's
  ``updated_at``, the frame's ``timestamp``]} of the first ``user.orders``
  message about it, from the traders' connections (``updated_at`` is when the
  matcher wrote the batch, ``timestamp`` when the web process handled the
  message, in ms);
- ``book_lag_ms``: per idle subscriber, ``receive time - event timestamp`` of
  each orderbook update (the event timestamp is the order's acceptance time);
- ``resyncs``: snapshots the server sent on its own (it had dropped messages).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import websockets

from exchange.apikeys import signing


async def _trader(url: str, key_id: str, secret: str, orders: dict, ready: asyncio.Event, stop: asyncio.Event):
    async with websockets.connect(url, max_queue=None) as ws:
        headers = signing.signed_headers(key_id, secret, "GET", "/ws/")
        await ws.send(json.dumps({"op": "auth", "api_key": key_id, "timestamp": int(headers["X-TIMESTAMP"]),
                                  "recvWindow": 5000, "signature": headers["X-SIGNATURE"]}))
        assert json.loads(await ws.recv())["type"] == "authenticated"
        await ws.send(json.dumps({"op": "subscribe", "channels": ["user.orders"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            if message["channel"] == "user.orders" and message["data"]["id"] not in orders:
                orders[message["data"]["id"]] = [now, message["data"]["updated_at"], message["timestamp"]]


async def _idle(url: str, symbol: str, lags: list, resyncs: list, ready: asyncio.Event, stop: asyncio.Event):
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": [f"orderbook.{symbol}", f"trades.{symbol}"]}))
        snapshots = 0
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            message = json.loads(raw)
            if message["type"] == "update" and message["channel"].startswith("orderbook."):
                lags.append(time.time() * 1000 - message["timestamp"])
            elif message["type"] == "snapshot":
                snapshots += 1
        resyncs.append(max(0, snapshots - 1))


async def main(config: dict, out_path: str) -> None:
    stop = asyncio.Event()
    orders: dict = {}
    lags: list[list] = []
    resyncs: list = []
    tasks, readies = [], []
    for key_id, secret in config["traders"]:
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(_trader(config["url"], key_id, secret, orders, ready, stop)))
    for index in range(config["idle"]):
        ready = asyncio.Event()
        readies.append(ready)
        lags.append([])
        tasks.append(asyncio.create_task(_idle(config["url"], config["symbol"], lags[-1], resyncs, ready, stop)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # do not storm the listen backlog
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 120)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await asyncio.sleep(config.get("tail_s", 2.0))
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    with open(out_path, "w") as out:
        json.dump({"orders": orders, "book_lag_ms": lags, "resyncs": resyncs}, out)


if __name__ == "__main__":
    with open(sys.argv[1]) as config_file:
        asyncio.run(main(json.load(config_file), sys.argv[2]))
