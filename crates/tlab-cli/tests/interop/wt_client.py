#!/usr/bin/env python3
"""Interop check of the `wt-stream` / `wt-datagram` transports against an independent WebTransport implementation
(aioquic's H3Connection with enable_webtransport).

A session is an extended CONNECT (:protocol webtransport) to /tlab/wt with the token in the `token` query parameter,
as a browser must send it. Certificate verification is off in aioquic; instead the DER SHA-256 of the certificate the
server presented is compared with --cert-sha256. Checks:
- stream session (/tlab/wt?token=T): one bidirectional stream starting with the u16 big-endian length of the open
  query `stream=0&mode=echo`, then M frames (24-byte big-endian header `>IIQQ` + payload) and FIN: every echo comes
  back exactly once, in order, byte for byte, then the server's FIN;
- datagram session (/tlab/wt?token=T&datagrams=1): one datagram holding one frame comes back unchanged (resent a few
  times if lost: datagrams are unreliable);
- a wrong token is refused with status 403.
Prints one JSON line (what arrived per stream under `received`, see tally.py); exits 0 on success, 1 otherwise.

Usage: wt_client.py --host 127.0.0.1 --port PORT --token T --cert-sha256 HEX --messages M --size B
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
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset
from cryptography.hazmat.primitives.serialization import Encoding
from tally import Tally

TIMEOUT_S = 30
HEADER = struct.Struct(">IIQQ")  # payload length, stream (top bit: control), seq, sent_at (ns)


def payload(seq, size):
    return bytes((seq + i) % 251 for i in range(size))


def encode(stream, seq, data):
    return HEADER.pack(len(data), stream, seq, time.monotonic_ns()) + data


def decode_all(body):
    """All frames of a byte string as (stream, control, seq, payload); it must end on a frame boundary."""
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


class WtClient(QuicConnectionProtocol):
    """One WebTransport session per QUIC connection: its CONNECT status, its streams' bytes, its datagrams."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.session_id = None
        self.status = self._loop.create_future()
        self.streams = {}  # stream id -> (bytearray, future set at FIN)
        self.datagrams = asyncio.Queue()

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            done = self.streams[event.stream_id][1]
            if not done.done():
                done.set_exception(AssertionError(f"stream reset with code {event.error_code:#x}"))
        for h3_event in self.http.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and h3_event.stream_id == self.session_id:
                if not self.status.done():
                    self.status.set_result(int(dict(h3_event.headers)[b":status"]))
            elif isinstance(h3_event, WebTransportStreamDataReceived) and h3_event.stream_id in self.streams:
                body, done = self.streams[h3_event.stream_id]
                body += h3_event.data
                if h3_event.stream_ended and not done.done():
                    done.set_result(bytes(body))
            elif isinstance(h3_event, DatagramReceived) and h3_event.stream_id == self.session_id:
                self.datagrams.put_nowait(h3_event.data)

    async def open_session(self, authority, path):
        """Sends the extended CONNECT and returns the response status."""
        self.session_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(self.session_id, [
            (b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
            (b":authority", authority.encode()), (b":path", path.encode()),
        ])
        self.transmit()
        return await self.status

    async def echo_stream(self, data):
        """Sends `data` on a new bidirectional stream with FIN; returns everything received until the server's FIN."""
        stream_id = self.http.create_webtransport_stream(self.session_id, is_unidirectional=False)
        # aioquic 1.7.2 does not mark a bidirectional WebTransport stream it opened as such, so it would parse the
        # server's bytes on it as HTTP/3 frames; mark it the way it marks one the peer opened.
        with self.http._get_or_create_stream(stream_id) as stream:
            stream.frame_type, stream.session_id = FrameType.WEBTRANSPORT_STREAM, self.session_id
        done = self._loop.create_future()
        self.streams[stream_id] = (bytearray(), done)
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self.transmit()
        return await done

    async def echo_datagram(self, data, attempts=5):
        for _ in range(attempts):
            self.http.send_datagram(self.session_id, data)
            self.transmit()
            try:
                return await asyncio.wait_for(self.datagrams.get(), 1.0)
            except asyncio.TimeoutError:
                continue
        raise AssertionError(f"no datagram echoed after {attempts} attempts")


def configuration():
    return QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                             server_name="localhost", max_datagram_frame_size=65536)


async def run(args):
    authority = f"{args.host}:{args.port}"
    m, size = args.messages, args.size
    async with connect(args.host, args.port, configuration=configuration(), create_protocol=WtClient) as client:
        certificate = client._quic.tls._peer_certificate
        actual = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
        expected = args.cert_sha256.replace(":", "").lower()
        check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")
        status = await client.open_session(authority, f"/tlab/wt?token={args.token}")
        check(status == 200, f"stream session: status {status}")
        query = b"stream=0&mode=echo"
        frames = b"".join(encode(0, seq, payload(seq, size)) for seq in range(m))
        echoed = decode_all(await client.echo_stream(struct.pack(">H", len(query)) + query + frames))
        tally = Tally()
        tally.open("echo/0")
        for stream, control, seq, data in echoed:
            tally.add(f"echo/{stream}" if not control else f"control/{stream}", seq, data)
        check(len(echoed) == m, f"echo: {len(echoed)} frames back, {m} sent")
        for expected_seq, (stream, control, seq, data) in enumerate(echoed):
            check((stream, control, seq) == (0, False, expected_seq),
                  f"echo: got stream {stream} seq {seq} control {control}, expected seq {expected_seq}")
            check(data == payload(expected_seq, size), f"echo: payload of seq {expected_seq} differs")

    async with connect(args.host, args.port, configuration=configuration(), create_protocol=WtClient) as client:
        status = await client.open_session(authority, f"/tlab/wt?token={args.token}&datagrams=1")
        check(status == 200, f"datagram session: status {status}")
        sent = encode(5, 42, payload(42, min(size, 1000)))
        back = await client.echo_datagram(sent)
        check(back == sent, "datagram: the echo differs from what was sent")
        _, back_stream, back_seq, _ = HEADER.unpack_from(back)
        tally.add(f"datagram/{back_stream & 0x7FFFFFFF}", back_seq, back[HEADER.size:])

    async with connect(args.host, args.port, configuration=configuration(), create_protocol=WtClient) as client:
        refused = await client.open_session(authority, f"/tlab/wt?token=wrong-{args.token}")
        check(refused == 403, f"wrong token: status {refused}")

    return {"echo": len(echoed), "datagram": len(sent), "unauthorized": refused, "cert_sha256": actual,
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
