#!/usr/bin/env python3
"""Interop check of the `grpc` transport against an independent gRPC implementation (grpcio, Python 3.11).

Stubs are generated at runtime from the project's proto (grpc_tools.protoc into a temporary directory). The server
certificate is fetched, its DER SHA-256 compared with --cert-sha256, and then trusted as the only root. Checks:
bidi `Stream` echo of M frames (exactly once, in order), `Source` of M frames, `Sink` of M frames (summary count),
and a wrong token refused with UNAUTHENTICATED. Prints one JSON line (with a per-stream `received` report, see tally.py); exits 0 on success, 1 otherwise.

Usage: grpc_client.py --proto-dir /work/main/proto --target 127.0.0.1:PORT --token T --cert-sha256 HEX
                      --messages M --size B
"""

import argparse
import hashlib
import importlib
import json
import socket
import ssl
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc
from tally import Tally

TIMEOUT_S = 30


def load_stubs(proto_dir, out_dir):
    """Generates transport_pb2 / transport_pb2_grpc from the proto and imports them."""
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", "tlab/v1/transport.proto"])
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    return importlib.import_module("tlab.v1.transport_pb2"), importlib.import_module("tlab.v1.transport_pb2_grpc")


def server_certificate_pem(host, port):
    """The server's certificate as PEM: a plain TLS handshake first, then one offering ALPN h2."""
    try:
        return ssl.get_server_certificate((host, port), timeout=TIMEOUT_S)
    except (ssl.SSLError, OSError):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


def payload(seq, size):
    return bytes((seq + i) % 251 for i in range(size))


def frames(pb, stream, count, size):
    for seq in range(count):
        yield pb.Frame(stream=stream, seq=seq, sent_at_ns=time.monotonic_ns(), payload=payload(seq, size))


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def run(args):
    host, port = args.target.rsplit(":", 1)
    pem = server_certificate_pem(host, int(port))
    actual = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    expected = args.cert_sha256.replace(":", "").lower()
    check(actual == expected, f"certificate SHA-256 {actual} != expected {expected}")

    with tempfile.TemporaryDirectory() as out_dir:
        pb, pb_grpc = load_stubs(args.proto_dir, out_dir)
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
        options = [("grpc.ssl_target_name_override", "localhost"),
                   ("grpc.max_receive_message_length", args.size + 1024)]
        with grpc.secure_channel(args.target, credentials, options=options) as channel:
            stub = pb_grpc.TransportStub(channel)
            auth = ("authorization", f"Bearer {args.token}")
            m, size = args.messages, args.size
            tally = Tally()
            tally.open("echo/0")
            tally.open("source/1")

            # Bidi echo on stream 0.
            replies = stub.Stream(frames(pb, 0, m, size), metadata=[auth, ("tlab-open", "stream=0&mode=echo")],
                                  timeout=TIMEOUT_S)
            echoed = 0
            for reply in replies:
                check(reply.stream == 0 and reply.seq == echoed and not reply.control,
                      f"echo: got stream {reply.stream} seq {reply.seq}, expected seq {echoed}")
                check(reply.payload == payload(echoed, size), f"echo: payload of seq {echoed} differs")
                tally.add("echo/0", reply.seq, reply.payload)
                echoed += 1
            check(echoed == m, f"echo: {echoed} frames back, {m} sent")

            # Server-streaming source on stream 1.
            request = pb.SourceRequest(stream=1, count=m, size=size, interval_us=0)
            sourced = 0
            for frame in stub.Source(request, metadata=[auth], timeout=TIMEOUT_S):
                check(frame.stream == 1 and frame.seq == sourced and len(frame.payload) == size,
                      f"source: got stream {frame.stream} seq {frame.seq} len {len(frame.payload)}")
                tally.add("source/1", frame.seq, frame.payload)
                sourced += 1
            check(sourced == m, f"source: {sourced} frames, {m} requested")

            # Client-streaming sink on stream 2.
            summary = stub.Sink(frames(pb, 2, m, size), metadata=[auth, ("tlab-open", "stream=2&mode=sink")],
                                timeout=TIMEOUT_S)
            check(summary.received == m, f"sink: server counted {summary.received}, {m} sent")

            # Wrong token.
            try:
                list(stub.Stream(iter([]), metadata=[("authorization", "Bearer wrong-" + args.token)],
                                 timeout=TIMEOUT_S))
                raise AssertionError("wrong token: the call succeeded")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"wrong token: status {e.code()}")

    return {"echo": echoed, "source": sourced, "sink": summary.received, "unauthenticated": True,
            "cert_sha256": actual, "received": tally.streams}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", required=True, help="root of the proto tree (contains tlab/v1/transport.proto)")
    parser.add_argument("--target", required=True, help="HOST:PORT of the tlab gRPC server")
    parser.add_argument("--token", required=True)
    parser.add_argument("--cert-sha256", required=True, help="expected SHA-256 of the server's DER certificate")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    start = time.monotonic()
    try:
        result = run(args)
    except Exception as e:  # one JSON line whatever went wrong
        print(json.dumps({"ok": False, "client": "grpcio", "grpcio": grpc.__version__,
                          "error": f"{type(e).__name__}: {e}"}))
        return 1
    result.update({"ok": True, "client": "grpcio", "grpcio": grpc.__version__,
                   "elapsed_ms": round((time.monotonic() - start) * 1000, 1)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
