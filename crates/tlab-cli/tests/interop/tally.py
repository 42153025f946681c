"""What an interop peer received, per stream, reported in its JSON summary under `received` so that the Rust test
checks it against what it asked for instead of trusting the peer's `ok`.

Each entry is keyed `<mode>/<stream>` and holds `count` (data messages received), `bytes` (their payload bytes) and
`crc32`: CRC-32 (zlib's, IEEE) over, for each message in the order received, its seq as 8 big-endian bytes followed
by its payload. A lost, duplicated, reordered, renumbered or altered message changes it.
"""

import zlib


class Tally:
    def __init__(self):
        self.streams = {}

    def open(self, label):
        """Reports `label` even if nothing arrives on it."""
        return self.streams.setdefault(label, {"count": 0, "bytes": 0, "crc32": 0})

    def add(self, label, seq, payload):
        entry = self.open(label)
        entry["count"] += 1
        entry["bytes"] += len(payload)
        entry["crc32"] = zlib.crc32(bytes(payload), zlib.crc32(seq.to_bytes(8, "big"), entry["crc32"]))
