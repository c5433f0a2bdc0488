"""Minimal PNG writer and reader for 8-bit images, numpy + zlib only.

Used by tools/gen_demo.py to write the demo avatar's background frames and by
tests/python to decode what the server returns. Neither OpenCV nor PIL is a
dependency of the project, and a decoder of our own lets the tests check the
server's PNGs strictly (chunk CRCs, IHDR fields, one IDAT stream, IEND).

Only what the project needs is supported: bit depth 8, colour types 0 (gray),
2 (RGB) and 6 (RGBA), no interlacing. All five row filters are implemented on
both sides, so the reader can be tested against every filter the writer emits.
"""

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Colour type -> samples per pixel (8-bit samples, so also bytes per pixel).
_CHANNELS = {0: 1, 2: 3, 6: 4}
_COLOR_TYPE = {1: 0, 3: 2, 4: 6}


class PngError(ValueError):
    """The bytes are not a PNG this module accepts."""


def _chunk(kind, payload):
    # A chunk's CRC covers the type and the payload, not the length.
    return (struct.pack(">I", len(payload)) + kind + payload +
            struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _paeth_predictor(a, b, c):
    """Vectorised Paeth predictor (PNG spec 9.4) on int16 arrays."""
    p = a + b - c
    pa = np.abs(p - a)
    pb = np.abs(p - b)
    pc = np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(raw, bpp, filters):
    """Filter every row of `raw` (H x rowbytes uint8) with the filter type
    given per row. Filtering reads only unfiltered bytes, so it vectorises
    over the whole image (unlike un-filtering)."""
    x = raw.astype(np.int16)
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[1:, bpp:] = x[:-1, :-bpp]
    predictors = {
        0: np.zeros_like(x),
        1: left,
        2: up,
        3: (left + up) // 2,
        4: _paeth_predictor(left, up, upleft),
    }
    out = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
    for ftype in set(filters):
        rows = np.array([i for i, f in enumerate(filters) if f == ftype])
        out[rows, 0] = ftype
        out[rows, 1:] = ((x[rows] - predictors[ftype][rows]) & 0xFF).astype(np.uint8)
    return out


def encode_png(img, level=1, filter_type=2):
    """Encode an H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA) uint8 array.

    filter_type: 0..4 applies that filter to every row; "cycle" uses filter
    (row mod 5), which exists to exercise decoders. Up (2) is the default
    because the demo frames are smooth vertical gradients, so it compresses
    well at zlib level 1 and keeps generation fast."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, ch = img.shape
    if ch not in _COLOR_TYPE:
        raise ValueError("need 1, 3 or 4 channels, got %d" % ch)
    if filter_type == "cycle":
        filters = [r % 5 for r in range(h)]
    else:
        filters = [int(filter_type)] * h
    filtered = _filter_rows(img.reshape(h, w * ch), ch, filters)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE[ch], 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr) +
            _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) +
            _chunk(b"IEND", b""))


def write_png(path, img, level=1, filter_type=2):
    data = encode_png(img, level, filter_type)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def read_chunks(data):
    """Split a PNG into (type, payload) pairs, checking signature and CRCs."""
    if data[:8] != PNG_SIGNATURE:
        raise PngError("bad PNG signature %r" % data[:8])
    chunks = []
    pos = 8
    while pos < len(data):
        if pos + 12 > len(data):
            raise PngError("truncated chunk header at byte %d" % pos)
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 8 + length
        if end + 4 > len(data):
            raise PngError("chunk %r at byte %d runs past the end" % (kind, pos))
        payload = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if crc != zlib.crc32(kind + payload) & 0xFFFFFFFF:
            raise PngError("CRC mismatch in chunk %r at byte %d" % (kind, pos))
        chunks.append((kind, payload))
        pos = end + 4
        if kind == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise PngError("no IEND chunk")
    if pos != len(data):
        raise PngError("%d bytes after IEND" % (len(data) - pos))
    return chunks


def _unfilter_slow(ftype, f, prev, bpp):
    """Average (3) and Paeth (4) depend on the byte just reconstructed to the
    left, so they are a sequential loop. The server never emits them (it uses
    Sub and Up), so plain Python is fast enough here."""
    out = bytearray(len(f))
    p = prev.tolist()
    src = f.tolist()
    for i in range(len(src)):
        a = out[i - bpp] if i >= bpp else 0
        b = p[i]
        if ftype == 3:
            pred = (a + b) >> 1
        else:
            c = p[i - bpp] if i >= bpp else 0
            pv = a + b - c
            pa, pb, pc = abs(pv - a), abs(pv - b), abs(pv - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        out[i] = (src[i] + pred) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


def decode_png(data):
    """Decode PNG bytes to an H x W x C uint8 array (C = 1, 3 or 4).
    Returns (array, info) where info holds the IHDR fields."""
    chunks = read_chunks(bytes(data))
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise PngError("first chunk must be a 13-byte IHDR")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    info = {"width": w, "height": h, "bit_depth": depth, "color_type": ctype,
            "interlace": interlace}
    if depth != 8 or ctype not in _CHANNELS or comp != 0 or filt != 0 or interlace != 0:
        raise PngError("unsupported IHDR %r" % (info,))
    if w == 0 or h == 0:
        raise PngError("empty image %dx%d" % (w, h))
    idat = b"".join(p for k, p in chunks if k == b"IDAT")
    if not idat:
        raise PngError("no IDAT chunk")
    d = zlib.decompressobj()
    raw = d.decompress(idat)
    if not d.eof:
        raise PngError("IDAT zlib stream is truncated")
    if d.unused_data:
        raise PngError("%d bytes after the zlib stream" % len(d.unused_data))
    bpp = _CHANNELS[ctype]
    rowbytes = w * bpp
    if len(raw) != h * (rowbytes + 1):
        raise PngError("decompressed %d bytes, expected %d" % (len(raw), h * (rowbytes + 1)))
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, rowbytes + 1)
    out = np.empty((h, rowbytes), dtype=np.uint8)
    prev = np.zeros(rowbytes, dtype=np.uint8)
    for y in range(h):
        ftype = int(rows[y, 0])
        f = rows[y, 1:]
        if ftype == 0:
            cur = f
        elif ftype == 1:
            # Sub: a running sum of each channel along the row, modulo 256
            # (uint8 accumulation wraps).
            cur = np.cumsum(f.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(rowbytes)
        elif ftype == 2:
            cur = f + prev  # uint8 addition wraps modulo 256
        elif ftype in (3, 4):
            cur = _unfilter_slow(ftype, f, prev, bpp)
        else:
            raise PngError("row %d: bad filter type %d" % (y, ftype))
        out[y] = cur
        prev = out[y]
    return out.reshape(h, w, bpp), info


def read_png(path):
    with open(path, "rb") as f:
        return decode_png(f.read())[0]
