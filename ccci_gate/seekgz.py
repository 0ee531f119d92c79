"""Seekable gzip: how a finished log is compressed (``logstore.py``).

One ordinary gzip member (RFC 1952) whose deflate stream is fully flushed every *block*
of text (1 MiB, more for logs over ~4 GB), so inflating can start afresh at each flush
point. The **index** of those points — ``(text offset, file offset)`` pairs, with the
text's length — sits in the header's extra field, subfield ``cx``, reserved before the
data and filled in after it. Any gzip reader ignores it (``zcat``, browsers, ``requests``
read the file as usual: ``tests/test_logstore.py``); :func:`read_range` starts at the
point at or before the wanted offset, so the tail of a big log costs one block, not the
whole log (``bench/logs.py``).
"""
from __future__ import annotations

import bisect
import struct
import time
import zlib
from typing import BinaryIO

BLOCK = 1 << 20
MAX_POINTS = 4000            # the extra field holds at most 64 KiB
SUBFIELD = b"cx"
INFLATE_MAX = 1 << 20        # text bytes inflated at a time by read_range
_HEAD = struct.Struct("<QI")     # text length, points
_POINT = struct.Struct("<QQ")    # text offset, file offset


def write(src: BinaryIO, size: int, dst: BinaryIO, level: int = 6, block: int = BLOCK) -> None:
    """Compress the first ``size`` bytes of ``src`` into ``dst`` (a seekable file)."""
    block = max(block, -(-size // (MAX_POINTS - 1)))
    room = _HEAD.size + _POINT.size * (size // block + 1)
    dst.write(b"\x1f\x8b\x08\x04" + struct.pack("<I", int(time.time())) + b"\x00\xff"
              + struct.pack("<H", room + 4) + SUBFIELD + struct.pack("<H", room))
    extra_at = dst.tell()
    dst.write(bytes(room))
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, done, points = 0, 0, [(0, dst.tell())]
    while done < size:
        chunk = src.read(min(block, size - done))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        done += len(chunk)
        dst.write(deflate.compress(chunk))
        if done < size:
            dst.write(deflate.flush(zlib.Z_FULL_FLUSH))
            points.append((done, dst.tell()))
    dst.write(deflate.flush())
    dst.write(struct.pack("<II", crc & 0xFFFFFFFF, done & 0xFFFFFFFF))
    dst.seek(extra_at)
    dst.write(_HEAD.pack(done, len(points)) + b"".join(_POINT.pack(*p) for p in points))


def index(fh: BinaryIO) -> tuple[int, list[tuple[int, int]]] | None:
    """``(text length, points)`` from a file :func:`write` made; None for another gzip."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:3] != b"\x1f\x8b\x08" or not head[3] & 0x04:
        return None
    extra = fh.read(struct.unpack("<H", head[10:12])[0])
    at = 0
    while at + 4 <= len(extra):
        name, length = extra[at:at + 2], struct.unpack("<H", extra[at + 2:at + 4])[0]
        if name == SUBFIELD and length >= _HEAD.size:
            total, count = _HEAD.unpack_from(extra, at + 4)
            if _HEAD.size + count * _POINT.size > length:
                return None
            return total, [_POINT.unpack_from(extra, at + 4 + _HEAD.size + k * _POINT.size)
                           for k in range(count)]
        at += 4 + length
    return None


def read_range(fh: BinaryIO, start: int, end: int | None) -> bytes | None:
    """Text bytes ``start`` to ``end`` (exclusive; None: to the end); None when the file
    has no index (the caller reads it the slow way)."""
    found = index(fh)
    if found is None:
        return None
    total, points = found
    end = total if end is None else min(end, total)
    if start >= end:
        return b""
    text_at, file_at = points[bisect.bisect_right([p[0] for p in points], start) - 1]
    fh.seek(file_at)
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    skip, want, out = start - text_at, end - start, bytearray()
    while len(out) < want and not inflate.eof:
        data = inflate.unconsumed_tail or fh.read(1 << 16)
        if not data:
            break
        # bounded: 64 KiB of a repetitive log inflate to 64 MiB
        piece = inflate.decompress(data, min(INFLATE_MAX, want - len(out) + skip))
        if skip:
            cut = min(skip, len(piece))
            piece, skip = piece[cut:], skip - cut
        out += piece
    return bytes(out[:want])
