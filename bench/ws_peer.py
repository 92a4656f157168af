#!/usr/bin/env python3
"""The peer of the `sources` suite: a Python client reading a venue's recorded frames from the
local server `ws_bench serve` runs, the way a Python producer does today: `websockets` (its
synchronous client), the standard `json` with prices and sizes as `Decimal` (exact, as money
should be), one tuple per trade. Prints JSON with events/s.

    python3 bench/ws_peer.py VENUE URL EVENTS
"""

import json
import sys
import time
from decimal import Decimal

from websockets.sync.client import connect


def main(venue, url, events):
    path = {"binance": "/stream?streams=btcusdt@trade", "alpaca": "/v1beta3/crypto/us", "polygon": "/stocks"}.get(venue, "")
    trades = []
    with connect(url + path, max_size=None, compression=None) as ws:
        if venue == "coinbase":
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches", "heartbeat"]}))
        elif venue == "alpaca":
            ws.recv()
            ws.send(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
            ws.recv()
            ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
            ws.recv()
        elif venue == "polygon":
            ws.recv()
            ws.send(json.dumps({"action": "auth", "params": "k"}))
            ws.recv()
            ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
        started = time.perf_counter()
        while len(trades) < events:
            msg = json.loads(ws.recv(), parse_float=Decimal)
            if venue == "coinbase":
                trades.append((msg["product_id"], msg["time"], Decimal(msg["price"]), Decimal(msg["size"]), msg["trade_id"]))
            elif venue == "binance":
                d = msg["data"]
                trades.append((d["s"], d["T"], Decimal(d["p"]), Decimal(d["q"]), d["t"]))
            elif venue == "alpaca":
                for m in msg:
                    if m["T"] == "t":
                        trades.append((m["S"], m["t"], m["p"], Decimal(m["s"]), m["i"]))
            else:
                for m in msg:
                    if m["ev"] == "T":
                        trades.append((m["sym"], m["t"], m["p"], Decimal(m["s"]), m["i"]))
        seconds = time.perf_counter() - started
    print(json.dumps({"venue": venue, "events": len(trades), "seconds": seconds, "events_per_second": len(trades) / seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
