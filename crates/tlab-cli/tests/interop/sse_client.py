#!/usr/bin/env python3
"""Interop check of the `sse-h1` / `sse-h2` transports against an independent SSE client (httpx + httpx-sse).

Wire protocol exercised (routes under /tlab/sse of --url):
- `GET /events?stream=S&mode=...&conn=HEX` (Accept: text/event-stream) answers 200 `text/event-stream`; each
  server->client message is one event `id: <seq>` (data only), `event: message|control`, `data: <base64 of the
  binary frame>`; `event: end` (empty data) ends the server's direction.
- `POST /messages?conn=HEX&stream=S[&fin=1]` carries concatenated binary frames and answers 204.
Frames are a 24-byte big-endian header `>IIQQ` (payload length, stream | 0x80000000 for control, seq, monotonic ns)
followed by the payload.

Checks: a source stream (token as `token` query parameter) delivers --messages events with ids 0..M-1 in order,
each a data frame of --size bytes; an echo stream (token as Bearer header) returns every POSTed frame exactly once,
in order, byte for byte, then `end`; a wrong token gets 401 on both routes. The SHA-256 of the server's DER
certificate, taken from the connection's SSL object, must equal --cert-sha256. Prints one JSON line (with a per-stream `received` report, see tally.py); exits 0 on
success, 1 otherwise.

Usage: sse_client.py --url https://127.0.0.1:PORT --token T --cert-sha256 HEX --messages M --size B
"""

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

import httpx
from httpx_sse import aconnect_sse
from tally import Tally

TIMEOUT_S = 30
HEADER = struct.Struct(">IIQQ")
CONTROL_BIT = 0x8000_0000
PATTERN = bytes(range(251))
# Frames per POST: a realistic REST uplink batches instead of one request per message.
POST_BATCH = 16


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def tls_context():
    """No CA verification: the certificate is pinned by hash instead (see `check_pin`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(response, expected):
    stream = response.extensions["network_stream"]
    der = stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
    actual = hashlib.sha256(der).hexdigest()
    check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")


def frame(stream, seq, size):
    """Payload byte i is (seq + i) mod 251."""
    start = seq % 251
    payload = (PATTERN * (size // 251 + 2))[start:start + size]
    return HEADER.pack(len(payload), stream, seq, time.monotonic_ns()) + payload


def decode_event(event):
    """The binary frame of a `message` or `control` event, checked against its event type and id."""
    raw = base64.b64decode(event.data, validate=True)
    length, stream_field, seq, _ = HEADER.unpack_from(raw)
    check(len(raw) == HEADER.size + length, f"event data holds {len(raw)} bytes, frame says {HEADER.size + length}")
    control = bool(stream_field & CONTROL_BIT)
    check(control == (event.event == "control"), f"`{event.event}` event carries a control={control} frame")
    if not control:
        check(event.id == str(seq), f"event id `{event.id}` != frame seq {seq}")
    return raw, stream_field & ~CONTROL_BIT, seq, control


class Endpoint:
    def __init__(self, args):
        parts = urlsplit(args.url)
        base = parts.path.split("/tlab/")[0].rstrip("/")
        self.root = f"https://{parts.netloc}{base}/tlab/sse"
        self.args = args
        self.pin = args.cert_sha256.replace(":", "").lower()
        self.conn = secrets.token_hex(8)

    def events_url(self, query):
        return f"{self.root}/events?{query}&conn={self.conn}"

    def messages_url(self, stream, fin=False):
        return f"{self.root}/messages?conn={self.conn}&stream={stream}" + ("&fin=1" if fin else "")


async def source_stream(client, ep, tally):
    """`mode=source`: M data events with ids 0..M-1, then `end`."""
    args = ep.args
    url = ep.events_url(f"stream=0&mode=source&count={args.messages}&size={args.size}&token={args.token}")
    received = 0
    tally.open("source/0")
    async with aconnect_sse(client, "GET", url) as source:
        check(source.response.status_code == 200, f"source stream answered {source.response.status_code}")
        check_pin(source.response, ep.pin)
        async for event in source.aiter_sse():
            if event.event == "end":
                break
            raw, stream, seq, control = decode_event(event)
            check(not control, f"unexpected control event on a plain source stream (seq {seq})")
            check((stream, seq) == (0, received), f"event for stream {stream} seq {seq}, expected seq {received}")
            check(len(raw) == HEADER.size + args.size, f"seq {seq}: payload of {len(raw) - HEADER.size} bytes")
            tally.add("source/0", seq, raw[HEADER.size:])
            received += 1
        else:
            raise AssertionError("source stream ended without `event: end`")
    check(received == args.messages, f"source delivered {received} of {args.messages}")
    return received


async def post_frames(client, ep, stream, frames, headers):
    for i in range(0, len(frames), POST_BATCH):
        batch = frames[i:i + POST_BATCH]
        last = i + POST_BATCH >= len(frames)
        response = await client.post(ep.messages_url(stream, fin=last), content=b"".join(batch),
                                     headers={**headers, "Content-Type": "application/octet-stream"})
        check(response.status_code == 204, f"POST answered {response.status_code}: {response.text}")
    if not frames:
        response = await client.post(ep.messages_url(stream, fin=True), headers=headers)
        check(response.status_code == 204, f"fin POST answered {response.status_code}: {response.text}")


async def echo_stream(client, ep, tally):
    """`mode=echo`: POSTed frames come back as events exactly once, in order, byte for byte; then `end`."""
    args = ep.args
    stream = 1
    headers = {"Authorization": f"Bearer {args.token}"}
    sent = [frame(stream, seq, args.size) for seq in range(args.messages)]
    echoed = 0
    tally.open(f"echo/{stream}")
    async with aconnect_sse(client, "GET", ep.events_url(f"stream={stream}&mode=echo"), headers=headers) as source:
        check(source.response.status_code == 200, f"echo stream answered {source.response.status_code}")
        check_pin(source.response, ep.pin)
        # The stream exists once the headers arrived: POSTs may start now.
        sender = asyncio.create_task(post_frames(client, ep, stream, sent, headers))
        async for event in source.aiter_sse():
            if event.event == "end":
                break
            raw, event_stream, seq, control = decode_event(event)
            check(not control and event_stream == stream, f"unexpected event for stream {event_stream} seq {seq}")
            tally.add(f"echo/{stream}", seq, raw[HEADER.size:])
            check(seq == echoed, f"echo seq {seq}, expected {echoed}")
            check(raw == sent[seq], f"echo {seq} differs from what was sent")
            echoed += 1
        else:
            raise AssertionError("echo stream ended without `event: end`")
        await sender
    check(echoed == args.messages, f"echoed {echoed} of {args.messages}")
    return echoed


async def unauthorized(client, ep):
    wrong = {"Authorization": f"Bearer wrong-{ep.args.token}"}
    get = await client.get(ep.events_url("stream=9&mode=echo"), headers={**wrong, "Accept": "text/event-stream"})
    check(get.status_code == 401, f"events with a wrong token answered {get.status_code}")
    post = await client.post(ep.messages_url(9), headers=wrong, content=b"")
    check(post.status_code == 401, f"messages with a wrong token answered {post.status_code}")
    missing = await client.get(ep.events_url("stream=9&mode=echo"))
    check(missing.status_code == 401, f"events without a token answered {missing.status_code}")
    return True


async def run(args):
    ep = Endpoint(args)
    tally = Tally()
    timeout = httpx.Timeout(TIMEOUT_S)
    async with httpx.AsyncClient(verify=tls_context(), timeout=timeout) as client:
        async with asyncio.timeout(TIMEOUT_S * 2):
            source = await source_stream(client, ep, tally)
            echoed = await echo_stream(client, ep, tally)
            refused = await unauthorized(client, ep)
    return {"source_events": source, "echoed": echoed, "unauthorized": refused, "cert_sha256": ep.pin,
            "received": tally.streams}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. https://127.0.0.1:PORT")
    parser.add_argument("--token", required=True)
    parser.add_argument("--cert-sha256", required=True, help="expected SHA-256 of the server's DER certificate")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    start = time.monotonic()
    versions = {"client": "httpx-sse", "httpx": httpx.__version__}
    try:
        result = asyncio.run(run(args))
    except Exception as e:  # one JSON line whatever went wrong
        print(json.dumps({"ok": False, **versions, "error": f"{type(e).__name__}: {e}"}))
        return 1
    result.update({"ok": True, **versions, "elapsed_ms": round((time.monotonic() - start) * 1000, 1)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
