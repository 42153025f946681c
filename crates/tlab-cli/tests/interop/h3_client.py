#!/usr/bin/env python3
"""Interop check of the `h3` transport against an independent HTTP/3 implementation (aioquic's H3Connection).

Certificate verification is off in aioquic; instead the DER SHA-256 of the certificate the server presented is
compared with --cert-sha256. Checks: an echo request (POST /tlab/h3?stream=0&mode=echo) whose body carries M frames,
sent in DATA chunks that do not align with the frames, each echoed back exactly once and in order in the response
body; a source request (mode=source&count=M&size=B) whose response body holds M frames; a wrong token refused with
401. Prints one JSON line (with a per-stream `received` report, see tally.py); exits 0 on success, 1 otherwise.

Usage: h3_client.py --host 127.0.0.1 --port PORT --token T --cert-sha256 HEX --messages M --size B
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import struct
import sys
import time

import aioquic
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset
from cryptography.hazmat.primitives.serialization import Encoding
from tally import Tally

TIMEOUT_S = 30
HEADER = struct.Struct(">IIQQ")  # payload length, stream (top bit: control), seq, sent_at (ns)
CHUNK = 1000  # DATA chunk size of the echo request body: deliberately not a multiple of the frame size


def payload(seq, size):
    return bytes((seq + i) % 251 for i in range(size))


def encode(stream, seq, data):
    return HEADER.pack(len(data), stream, seq, time.monotonic_ns()) + data


def decode_all(body):
    """All frames of a body as (stream, control, seq, payload); the body must end on a frame boundary."""
    frames, offset = [], 0
    while offset < len(body):
        if len(body) - offset < HEADER.size:
            raise AssertionError(f"{len(body) - offset} bytes left: truncated header")
        length, stream, seq, _sent_at = HEADER.unpack_from(body, offset)
        start = offset + HEADER.size
        if start + length > len(body):
            raise AssertionError(f"frame of {length} bytes truncated")
        frames.append((stream & 0x7FFFFFFF, bool(stream & 0x80000000), seq, bytes(body[start:start + length])))
        offset = start + length
    return frames


def check(condition, what):
    if not condition:
        raise AssertionError(what)


class Response:
    def __init__(self, loop):
        self.status = None
        self.body = bytearray()
        self.done = loop.create_future()


class H3Client(QuicConnectionProtocol):
    """Sends requests on aioquic's H3Connection and collects each response (status, body) until its stream ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.responses = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.responses:
            response = self.responses[event.stream_id]
            if not response.done.done():
                response.done.set_exception(AssertionError(f"stream reset with code {event.error_code:#x}"))
        for h3_event in self.http.handle_event(event):
            response = self.responses.get(getattr(h3_event, "stream_id", None))
            if response is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                response.status = int(dict(h3_event.headers)[b":status"])
            elif isinstance(h3_event, DataReceived):
                response.body += h3_event.data
            if getattr(h3_event, "stream_ended", False) and not response.done.done():
                response.done.set_result(response)

    async def request(self, authority, path, token, body=b""):
        """POSTs `body` (in CHUNK-sized DATA frames) and returns the response once its stream ended."""
        stream_id = self._quic.get_next_available_stream_id()
        response = self.responses[stream_id] = Response(self._loop)
        self.http.send_headers(stream_id, [
            (b":method", b"POST"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/octet-stream"),
        ])
        for offset in range(0, len(body), CHUNK):
            self.http.send_data(stream_id, body[offset:offset + CHUNK], end_stream=False)
            self.transmit()
            await asyncio.sleep(0)
        self.http.send_data(stream_id, b"", end_stream=True)
        self.transmit()
        return await response.done


async def run(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                               server_name="localhost")
    authority = f"{args.host}:{args.port}"
    m, size = args.messages, args.size
    async with connect(args.host, args.port, configuration=config, create_protocol=H3Client) as client:
        certificate = client._quic.tls._peer_certificate
        actual = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
        expected = args.cert_sha256.replace(":", "").lower()
        check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")

        body = b"".join(encode(0, seq, payload(seq, size)) for seq in range(m))
        echo = await client.request(authority, "/tlab/h3?stream=0&mode=echo", args.token, body)
        check(echo.status == 200, f"echo: status {echo.status}")
        echoed = decode_all(echo.body)
        tally = Tally()
        tally.open("echo/0")
        for stream, control, seq, data in echoed:
            tally.add(f"echo/{stream}" if not control else f"control/{stream}", seq, data)
        check(len(echoed) == m, f"echo: {len(echoed)} frames back, {m} sent")
        for expected_seq, (stream, control, seq, data) in enumerate(echoed):
            check((stream, control, seq) == (0, False, expected_seq),
                  f"echo: got stream {stream} seq {seq} control {control}, expected seq {expected_seq}")
            check(data == payload(expected_seq, size), f"echo: payload of seq {expected_seq} differs")

        source = await client.request(authority, f"/tlab/h3?stream=1&mode=source&count={m}&size={size}", args.token)
        check(source.status == 200, f"source: status {source.status}")
        sourced = decode_all(source.body)
        tally.open("source/1")
        for stream, control, seq, data in sourced:
            tally.add(f"source/{stream}" if not control else f"control/{stream}", seq, data)
        check([(s, c, q, len(d)) for s, c, q, d in sourced] == [(1, False, q, size) for q in range(m)],
              f"source: {len(sourced)} frames not numbered 0..{m - 1} on stream 1 with {size}-byte payloads")

        refused = await client.request(authority, "/tlab/h3?stream=2&mode=echo", "wrong-" + args.token)
        check(refused.status == 401 and not refused.body, f"wrong token: status {refused.status}")

    return {"echo": len(echoed), "source": len(sourced), "unauthorized": refused.status, "cert_sha256": actual,
            "received": tally.streams}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--cert-sha256", required=True, help="expected SHA-256 of the server's DER certificate")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    start = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), TIMEOUT_S))
    except Exception as e:  # one JSON line whatever went wrong
        print(json.dumps({"ok": False, "client": "aioquic", "aioquic": aioquic.__version__,
                          "error": f"{type(e).__name__}: {e}"}))
        return 1
    result.update({"ok": True, "client": "aioquic", "aioquic": aioquic.__version__,
                   "elapsed_ms": round((time.monotonic() - start) * 1000, 1)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
