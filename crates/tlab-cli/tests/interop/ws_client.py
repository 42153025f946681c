#!/usr/bin/env python3
"""Interop check of the `ws` / `ws-mux` transports against an independent WebSocket implementation (websockets).

One `tlab serve --transport ws|ws-mux` serves both endpoints, so both are exercised whatever --url names:
- `/tlab/ws` (one connection per stream, StreamOpen in the query, token in the Authorization header): N connections;
- `/tlab/ws-mux` (one connection, token in the `token` query parameter): N streams opened with text `open <query>`.
Each stream sends M binary frames (24-byte big-endian header `>IIQQ` len, stream, seq, monotonic ns + payload) and
text `fin <stream>`; every echo must come back exactly once, in order, byte for byte, followed by the server's
`fin <stream>`. The SHA-256 of the server's DER certificate (taken from each connection's SSL object) must equal
--cert-sha256. Finally a wrong token must be refused with HTTP 401 on both endpoints. Prints one JSON line (with a per-stream `received` report, see tally.py); exits 0
on success, 1 otherwise.

Usage: ws_client.py --url wss://127.0.0.1:PORT/tlab/ws --token T --cert-sha256 HEX --streams N --messages M --size B
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

import websockets
from tally import Tally
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

TIMEOUT_S = 30
HEADER = struct.Struct(">IIQQ")
PATTERN = bytes(range(251))


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def tls_context():
    """No CA verification: the certificate is pinned by hash instead (see `check_pin`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_pin(ws, expected):
    der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    actual = hashlib.sha256(der).hexdigest()
    check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")
    return actual


def frame(stream, seq, size):
    """Payload byte i is (seq + i) mod 251."""
    start = seq % 251
    payload = (PATTERN * (size // 251 + 2))[start:start + size]
    return HEADER.pack(len(payload), stream, seq, time.monotonic_ns()) + payload


class Endpoint:
    """Where and how to connect."""

    def __init__(self, args):
        parts = urlsplit(args.url)
        base = parts.path.split("/tlab/")[0].rstrip("/")
        self.root = f"wss://{parts.netloc}{base}"
        self.args = args
        self.pin = args.cert_sha256.replace(":", "").lower()

    def connect(self, path, headers=None):
        return connect(self.root + path, ssl=tls_context(), additional_headers=headers, compression=None,
                       max_size=self.args.size + HEADER.size + 1024, open_timeout=TIMEOUT_S)


async def expect_echoes(ws, sent, streams, tally, mode):
    """Reads until every stream in `streams` got its echoes (exactly once, in order) and its `fin`."""
    next_seq = {s: 0 for s in streams}
    for s in streams:
        tally.open(f"{mode}/{s}")
    finished = set()
    while finished != set(streams):
        msg = await ws.recv()
        if isinstance(msg, str):
            word, stream = msg.split(" ", 1)
            stream = int(stream)
            check(word == "fin" and stream in next_seq and stream not in finished, f"unexpected text `{msg}`")
            check(next_seq[stream] == len(sent[stream]), f"stream {stream}: fin after {next_seq[stream]} echoes")
            finished.add(stream)
            continue
        length, stream, seq, _ = HEADER.unpack_from(msg)
        check(stream in next_seq and stream not in finished, f"echo on unexpected stream {stream}")
        tally.add(f"{mode}/{stream}", seq, msg[HEADER.size:])
        check(seq == next_seq[stream], f"stream {stream}: seq {seq}, expected {next_seq[stream]}")
        check(msg == sent[stream][seq] and length == len(msg) - HEADER.size, f"stream {stream}: echo {seq} differs")
        next_seq[stream] += 1
    return sum(next_seq.values())


async def send_stream(ws, stream, frames):
    for f in frames:
        await ws.send(f)
    await ws.send(f"fin {stream}")


async def per_stream(ep, stream, tally):
    """Mode `ws`: stream `stream` on its own connection."""
    args = ep.args
    headers = {"Authorization": f"Bearer {args.token}"}
    async with ep.connect(f"/tlab/ws?stream={stream}&mode=echo", headers) as ws:
        check_pin(ws, ep.pin)
        sent = {stream: [frame(stream, seq, args.size) for seq in range(args.messages)]}
        _, echoed = await asyncio.gather(send_stream(ws, stream, sent[stream]), expect_echoes(ws, sent, [stream], tally, "ws"))
    return echoed


async def multiplexed(ep, tally):
    """Mode `ws-mux`: every stream on one connection."""
    args = ep.args
    streams = list(range(args.streams))
    async with ep.connect(f"/tlab/ws-mux?token={args.token}") as ws:
        check_pin(ws, ep.pin)
        sent = {s: [frame(s, seq, args.size) for seq in range(args.messages)] for s in streams}
        for s in streams:
            await ws.send(f"open stream={s}&mode=echo")
        senders = asyncio.gather(*(send_stream(ws, s, sent[s]) for s in streams))
        _, echoed = await asyncio.gather(senders, expect_echoes(ws, sent, streams, tally, "ws-mux"))
    return echoed


async def refused(ep, path, headers=None):
    try:
        async with ep.connect(path, headers):
            pass
    except InvalidStatus as e:
        check(e.response.status_code == 401, f"{path}: wrong token answered {e.response.status_code}, not 401")
        return True
    raise AssertionError(f"{path}: a wrong token was accepted")


async def run(args):
    ep = Endpoint(args)
    tally = Tally()
    async with asyncio.timeout(TIMEOUT_S):
        echoed = await asyncio.gather(*(per_stream(ep, s, tally) for s in range(args.streams)))
        mux_echoed = await multiplexed(ep, tally)
        wrong = "wrong-" + args.token
        await refused(ep, "/tlab/ws?stream=0&mode=echo", {"Authorization": f"Bearer {wrong}"})
        await refused(ep, f"/tlab/ws-mux?token={wrong}")
        await refused(ep, "/tlab/ws-mux")
    expected = args.streams * args.messages
    check(sum(echoed) == expected and mux_echoed == expected, f"echoed {sum(echoed)} / {mux_echoed}, expected {expected}")
    return {"ws_echoed": sum(echoed), "ws_mux_echoed": mux_echoed, "unauthorized": True, "cert_sha256": ep.pin,
            "received": tally.streams}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="URL printed by tlab serve (wss://IP:PORT/tlab/ws or /tlab/ws-mux)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--cert-sha256", required=True, help="expected SHA-256 of the server's DER certificate")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    start = time.monotonic()
    try:
        result = asyncio.run(run(args))
    except Exception as e:  # one JSON line whatever went wrong
        print(json.dumps({"ok": False, "client": "websockets", "websockets": websockets.__version__,
                          "error": f"{type(e).__name__}: {e}"}))
        return 1
    result.update({"ok": True, "client": "websockets", "websockets": websockets.__version__,
                   "elapsed_ms": round((time.monotonic() - start) * 1000, 1)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
