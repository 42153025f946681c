#!/usr/bin/env python3
"""Interop check of the raw `quic` transport against an independent QUIC implementation (aioquic's
QuicConnectionProtocol, speaking our framing on plain QUIC streams; ALPN `tlab-quic/1`).

Certificate verification is off in aioquic; instead the DER SHA-256 of the certificate the server presented is
compared with --cert-sha256. Checks: 2 concurrent streams, each opened with two headers (u16 big-endian length +
UTF-8): the token, then `stream=S&mode=echo`, carrying M frames (24-byte big-endian header `>IIQQ` len, stream, seq, monotonic ns, then
payload) and a FIN: every frame must be echoed exactly once, in order, byte for byte, followed by the server's FIN
(no reset). Finally a stream with a wrong token must be refused: CONNECTION_CLOSE with application error 0x101
"unauthorized". Prints one JSON line (with a per-stream `received` report, see tally.py); exits 0 on success, 1 otherwise.

Usage: quic_client.py --host 127.0.0.1 --port PORT --token T --cert-sha256 HEX --messages M --size B
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
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset
from cryptography.hazmat.primitives.serialization import Encoding
from tally import Tally

TIMEOUT_S = 30
ALPN = "tlab-quic/1"
HEADER = struct.Struct(">IIQQ")  # payload length, stream (top bit: control), seq, sent_at (ns)
UNAUTHORIZED = 0x101
STREAMS = (0, 1)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def open_header(text):
    """What starts every stream: u16 big-endian length, then the UTF-8 text."""
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def frame(stream, seq, size):
    payload = bytes((seq + i) % 251 for i in range(size))
    return HEADER.pack(len(payload), stream, seq, time.monotonic_ns()) + payload


class RawQuicClient(QuicConnectionProtocol):
    """aioquic's stream readers/writers, plus a record of stream resets and of the connection's close."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resets = {}
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
            reader = self._stream_readers.get(event.stream_id)
            if reader is not None:
                reader.feed_eof()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = (event.error_code, event.reason_phrase)
        super().quic_event_received(event)


def configuration():
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name="localhost")
    config.verify_mode = ssl.CERT_NONE  # pinned by hash below instead
    return config


def check_pin(client, expected):
    certificate = client._quic.tls._peer_certificate
    actual = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")
    return actual


async def refused_stream(client, token):
    """Opens a stream with `token`; returns what arrived before the connection closed (nothing, when refused)."""
    reader, writer = await client.create_stream()
    writer.write(open_header(token) + open_header("stream=0&mode=echo") + frame(0, 0, 8))
    writer.write_eof()
    return await reader.read()


async def echo_stream(client, token, stream, messages, size, tally):
    reader, writer = await client.create_stream()
    stream_id = writer.get_extra_info("stream_id")
    sent = [frame(stream, seq, size) for seq in range(messages)]
    writer.write(open_header(token) + open_header(f"stream={stream}&mode=echo") + b"".join(sent))
    writer.write_eof()
    tally.open(f"echo/{stream}")
    for seq, expected in enumerate(sent):
        try:
            head = await reader.readexactly(HEADER.size)
            length, echoed_stream, echoed_seq, _ = HEADER.unpack(head)
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise AssertionError(f"stream {stream}: ended after {seq} of {messages} echoes "
                                 f"(reset: {client.resets.get(stream_id)})")
        check((echoed_stream, echoed_seq) == (stream, seq), f"stream {stream}: got {echoed_stream}/{echoed_seq}, expected seq {seq}")
        tally.add(f"echo/{stream}", echoed_seq, body)
        check(head + body == expected, f"stream {stream}: echo {seq} differs")
    check(await reader.read() == b"", f"stream {stream}: bytes after the last echo")
    check(stream_id not in client.resets, f"stream {stream}: reset with {client.resets.get(stream_id)} instead of FIN")
    return messages


async def run(args):
    pin = args.cert_sha256.replace(":", "").lower()
    tally = Tally()
    async with asyncio.timeout(TIMEOUT_S):
        async with connect(args.host, args.port, configuration=configuration(), create_protocol=RawQuicClient) as client:
            actual = check_pin(client, pin)
            echoed = await asyncio.gather(*(echo_stream(client, args.token, s, args.messages, args.size, tally) for s in STREAMS))

        async with connect(args.host, args.port, configuration=configuration(), create_protocol=RawQuicClient) as client:
            answer = await refused_stream(client, "wrong-" + args.token)
            check(answer == b"", f"wrong token: the server answered {answer!r}")
            await client.wait_closed()
            check(client.terminated is not None and client.terminated[0] == UNAUTHORIZED,
                  f"wrong token: connection closed with {client.terminated}, expected 0x101")
            refusal = {"close_code": client.terminated[0], "reason": client.terminated[1]}
    check(sum(echoed) == len(STREAMS) * args.messages, f"echoed {sum(echoed)}")
    return {"echoed": sum(echoed), "streams": len(STREAMS), "unauthorized": refusal, "cert_sha256": actual,
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
        result = asyncio.run(run(args))
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
