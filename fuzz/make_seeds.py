#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

    /usr/bin/python3 fuzz/make_seeds.py

The seeds are committed; this script documents how they were made and
rewrites them identically (deterministic output). Standard library only,
plus a C compiler and libturbojpeg for the JPEG seeds (a 30-line helper is
compiled into a temporary directory).
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- config

CONFIGS = {
    "minimal.yaml": "models: {}\n",
    "demo.yaml": """\
server:
  listen: "0.0.0.0:50053"
models:
  demo:
    model_path: models/demo.onnx
    background_dir: avatar/frames
    crop_rects_path: avatar/crop_rects.json
    preload: true
  demo_b1:
    model_path: models/demo_b1.onnx
    background_dir: avatar/frames
    crop_rects_path: avatar/crop_rects_list.json
""",
    "full.yaml": """\
server:
  listen: "0.0.0.0:50053"
  max_message_mb: 128
  worker_threads: 4
  ort_intra_threads: 0
  ort_inter_threads: 1
  max_batch: 32
  png_level: 1
  max_queue: 256
  drain_seconds: 10
capacity:
  max_models: 4
  max_memory_gb: 8.5
  eviction_policy: lfu
  idle_unload_minutes: 0.5
  idle_check_seconds: 60
  stats_report_seconds: 300
  load_retry_seconds: 0
models:
  sanders:
    model_path: /models/sanders.onnx
    background_dir: avatars/sanders/frames
    crop_rects_path: avatars/sanders/crop_rects.json
    num_frames: 0
    preload: false
    pinned: true
    memory_estimate_mb: 512
    frame_order: pingpong
    channel_order: rgb
    paste_margin: 0
  a.b-c_9:
    model_path: "m.onnx"
    background_dir: 'f'
    crop_rects_path: r.json
http:
  enabled: false
  listen: "127.0.0.1:8053"
  cors_origins: ["*", "https://example.com"]
  web_root: web
""",
    "flow.yaml": "{server: {listen: '[::1]:1', max_batch: 1}, capacity: {max_models: 1},"
                 " models: {x: {model_path: a, background_dir: b, crop_rects_path: c}}}\n",
    "anchors.yaml": """\
defaults: &d
  model_path: m.onnx
models:
  one: *d
  two: {<<: *d}
""",
    "bad_value.yaml": "server:\n  max_batch: -3\n  png_level: nine\n",
    "bad_key.yaml": "capacity:\n  max_modles: 3\n",
    "tabs.yaml": "server:\n\tlisten: x\n",
}

# ---------------------------------------------------------------- croprects

CROPRECTS = {
    "keyed.json": '{"0": {"rect": [546, 210, 735, 399], "original_path": "f/0.png"},'
                  ' "1": {"rect": [551, 212, 740, 401]}}',
    "list.json": "[[546, 210, 735, 399], [551, 212, 740, 401], [0, 0, 1, 1]]",
    "objects.json": '[{"x1": 1, "y1": 2, "x2": 30, "y2": 40}, {"x1": 0.0, "y1": 0, "x2": 12.0, "y2": 9}]',
    "empty_list.json": "[]",
    "empty_object.json": "{}",
    "gap.json": '{"0": {"rect": [0, 0, 5, 5]}, "2": {"rect": [0, 0, 5, 5]}}',
    "inverted.json": "[[10, 10, 5, 5]]",
    "float.json": "[[1.5, 0, 4, 4]]",
    "huge.json": "[[0, 0, 99999999999999999999, 4]]",
    "nested.json": '[[[1, 2, 3, 4]]]',
    "truncated.json": '{"0": {"rect": [1, 2, 3',
}

# ---------------------------------------------------------------- images


def chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload +
            struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


SIG = b"\x89PNG\r\n\x1a\n"


def png(w, h, depth, ctype, rows, extra=b"", interlace=0, plte=None, trns=None):
    """rows: list of raw (unfiltered) scanline bytes; filter byte 0 added."""
    out = SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    out += extra
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows), 9))
    return out + chunk(b"IEND", b"")


def pixel_rows(w, h, ch, depth=8):
    rows = []
    for y in range(h):
        row = bytearray()
        for x in range(w):
            for c in range(ch):
                v = (x * 37 + y * 11 + c * 80) & 0xFF
                row += bytes([v]) if depth == 8 else struct.pack(">H", v * 257)
        rows.append(bytes(row))
    return rows


def adam7_rows(w, h, ch):
    """Raw rows of an interlaced 8-bit image, pass after pass."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in passes:
        xs = range(x0, w, dx)
        for y in range(y0, h, dy):
            if not xs:
                continue
            rows.append(bytes((x * 37 + y * 11 + c * 80) & 0xFF for x in xs for c in range(ch)))
    return rows


def images():
    seeds = {}
    seeds["rgb8.png"] = png(8, 6, 8, 2, pixel_rows(8, 6, 3))
    seeds["gray8.png"] = png(5, 3, 8, 0, pixel_rows(5, 3, 1))
    seeds["gray_alpha.png"] = png(4, 4, 8, 4, pixel_rows(4, 4, 2))
    seeds["rgba8.png"] = png(3, 2, 8, 6, pixel_rows(3, 2, 4))
    seeds["rgb16.png"] = png(3, 3, 16, 2, pixel_rows(3, 3, 3, 16))
    seeds["gray1.png"] = png(16, 2, 1, 0, [b"\xa5\x0f", b"\xff\x00"])
    seeds["palette4.png"] = png(4, 2, 4, 3, [b"\x01\x23", b"\x32\x10"],
                                plte=b"\x00\x00\x00\xff\x00\x00\x00\xff\x00\x00\x00\xff", trns=b"\x80")
    seeds["interlaced.png"] = png(9, 9, 8, 2, adam7_rows(9, 9, 3), interlace=1)
    seeds["text_chunks.png"] = png(2, 2, 8, 2, pixel_rows(2, 2, 3), extra=(
        chunk(b"tEXt", b"Comment\x00seed") +
        chunk(b"zTXt", b"Title\x00\x00" + zlib.compress(b"compressed text")) +
        chunk(b"gAMA", struct.pack(">I", 45455)) +
        chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 64))))
    seeds["frame_1280x720_header.png"] = png(1280, 720, 8, 2, [b"\x00" * 3840] * 2)  # IDAT too short
    seeds["bad_crc.png"] = seeds["rgb8.png"][:-5] + b"\x00" + seeds["rgb8.png"][-4:]
    seeds["truncated.png"] = seeds["rgb8.png"][:40]
    return seeds


JPEG_HELPER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>
/* usage: helper OUT W H SUBSAMP FLAGS PIXELFORMAT */
int main(int argc, char **argv) {
    if (argc != 7) return 2;
    int w = atoi(argv[2]), h = atoi(argv[3]), ss = atoi(argv[4]), flags = atoi(argv[5]), pf = atoi(argv[6]);
    int ps = tjPixelSize[pf];
    unsigned char *px = malloc((size_t)w * h * ps);
    for (int i = 0; i < w * h * ps; i++) px[i] = (unsigned char)(i * 37 + (i / (w * ps)) * 11);
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    unsigned long len = 0;
    if (tjCompress2(tj, px, w, 0, h, pf, &out, &len, ss, 75, flags) != 0) {
        fprintf(stderr, "%s\n", tjGetErrorStr2(tj));
        return 1;
    }
    FILE *f = fopen(argv[1], "wb");
    fwrite(out, 1, len, f);
    fclose(f);
    return 0;
}
"""

# (name, w, h, subsampling, flags, pixel format): TJSAMP_444=0, 422=1, 420=2,
# GRAY=3; TJFLAG_PROGRESSIVE=16384; TJPF_RGB=0, TJPF_GRAY=6, TJPF_CMYK=11.
JPEGS = [("rgb444.jpg", 16, 8, 0, 0, 0), ("rgb420.jpg", 17, 9, 2, 0, 0), ("rgb422.jpg", 8, 8, 1, 0, 0),
         ("gray.jpg", 8, 8, 3, 0, 6), ("progressive.jpg", 16, 16, 2, 16384, 0), ("cmyk.jpg", 8, 8, 0, 0, 11)]


def jpegs():
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        sys.exit("make_seeds: a C compiler is needed for the JPEG seeds")
    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "h.c"), os.path.join(tmp, "h")
        with open(src, "w") as f:
            f.write(JPEG_HELPER)
        subprocess.check_call([cc, "-O1", "-o", exe, src, "-lturbojpeg"])
        for name, w, h, ss, flags, pf in JPEGS:
            path = os.path.join(tmp, name)
            subprocess.check_call([exe, path, str(w), str(h), str(ss), str(flags), str(pf)])
            with open(path, "rb") as f:
                seeds[name] = f.read()
    seeds["truncated.jpg"] = seeds["rgb420.jpg"][: len(seeds["rgb420.jpg"]) // 2]
    return seeds


# ---------------------------------------------------------------- protobuf

def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def floats(vals):
    return struct.pack("<%df" % len(vals), *vals)


def infer_req(model, batch, start, visual=(), audio=()):
    msg = field_bytes(1, model)
    if visual:
        msg += field_bytes(2, floats(visual))
    if audio:
        msg += field_bytes(3, floats(audio))
    return msg + field_varint(4, batch) + field_varint(5, start)


def service_seeds():
    # Selector byte (method, proto order) + request message.
    INFER, LIST, STATS, LOAD, UNLOAD, HEALTH = range(6)
    s = {}
    s["infer_demo"] = bytes([INFER]) + infer_req("demo", 1, 0, [0.5] * 8, [0.1] * 4)
    s["infer_missing"] = bytes([INFER]) + infer_req("missing", 2, 3, [0.5], [0.5])
    s["infer_huge"] = bytes([INFER]) + infer_req("huge", 1, 0)
    s["infer_unknown"] = bytes([INFER]) + infer_req("nope", 1, 0)
    s["infer_batch0"] = bytes([INFER]) + infer_req("demo", 0, 0)
    s["infer_negative_start"] = bytes([INFER]) + infer_req("demo_pp", 1, -1)
    s["infer_nan"] = bytes([INFER]) + infer_req("demo_b1", 1, 0, [float("nan")], [float("inf")])
    s["infer_unpacked_floats"] = bytes([INFER]) + field_bytes(1, "demo") + (
        varint(2 << 3 | 5) + floats([1.0])) * 3 + field_varint(4, 1)
    s["list"] = bytes([LIST])
    s["stats_all"] = bytes([STATS]) + field_bytes(1, "")
    s["stats_demo"] = bytes([STATS]) + field_bytes(1, "demo")
    s["stats_unknown"] = bytes([STATS]) + field_bytes(1, "nope")
    s["load_demo"] = bytes([LOAD]) + field_bytes(1, "demo")
    s["load_force"] = bytes([LOAD]) + field_bytes(1, "demo_pp") + field_varint(2, 1)
    s["load_missing"] = bytes([LOAD]) + field_bytes(1, "missing") + field_varint(2, 1)
    s["load_no_rects"] = bytes([LOAD]) + field_bytes(1, "no_rects")
    s["unload_demo"] = bytes([UNLOAD]) + field_bytes(1, "demo")
    s["unload_unknown"] = bytes([UNLOAD]) + field_bytes(1, "x" * 200)
    s["health"] = bytes([HEALTH])
    s["unknown_fields"] = bytes([HEALTH]) + field_varint(99, 7) + field_bytes(100, "zz")
    return s


def wire_seeds():
    # See fuzz_wire.c: number of cuts k, k cut positions, the message.
    def seed(cuts, msg):
        return bytes([len(cuts)] + list(cuts)) + msg
    s = {}
    s["one_span"] = seed([], infer_req("demo", 2, 5, [0.5, 1.5, -2.0], [0.25]))
    s["three_spans"] = seed([3, 9], infer_req("demo_b1", 1, 0, [1.0] * 6, [2.0] * 3))
    s["empty_spans"] = seed([0, 0, 7, 7], infer_req("x", 1, 1, [0.0], [0.0]))
    s["unpacked_floats"] = seed([5], field_bytes(1, "demo") + (varint(2 << 3 | 5) + floats([1.0])) * 3 +
                                (varint(3 << 3 | 5) + floats([float("nan")])) + field_varint(4, 1))
    s["repeated_fields"] = seed([11], infer_req("a", 1, 0, [1.0], [2.0]) + infer_req("bb", 2, 3, [3.0], [4.0]))
    s["unknown_fields"] = seed([2], field_varint(9, 300) + field_bytes(10, "zz") + varint(11 << 3 | 1) +
                               b"\0" * 8 + varint(12 << 3 | 5) + b"\0" * 4 + infer_req("demo", 1, 0))
    s["negative_ints"] = seed([], field_varint(4, -5) + field_varint(5, -(2 ** 31)))
    s["odd_tensor_length"] = seed([], field_bytes(2, b"\0" * 7))
    s["truncated"] = seed([1], infer_req("demo", 1, 0, [0.5] * 4)[:-3])
    s["group"] = seed([], varint(6 << 3 | 3) + varint(6 << 3 | 4))
    s["long_id"] = seed([64], field_bytes(1, "i" * 200))
    s["nul_in_id"] = seed([], field_bytes(1, b"de\0mo"))
    # compact encodings: u8 visual + f16 audio (1.0, 1.0), then the same
    # with a second visual encoding (f16 Inf) that must be refused
    compact = field_bytes(1, "demo") + field_bytes(8, b"\x00\x80\xff") + field_bytes(10, b"\x00\x3c\x01\x00")
    s["compact_ok"] = seed([14], compact + field_varint(4, 1))
    s["compact_mixed"] = seed([9], compact + field_bytes(9, b"\x00\x7c") + field_varint(4, 1))
    # binary16 NaNs, one cut inside a NaN: the tensor must decode to the same
    # bits however it is split (a finding of fuzz_wire, fixed in wire.c)
    s["f16_nan_split"] = seed([33], field_bytes(1, "demo") + field_bytes(10, b"\x00\x3c" + b"\xff\xff" * 20) +
                              field_varint(4, 1))
    return s


def infer_seeds():
    # See fuzz_infer.c: model, batch+1, start (4 bytes), flags, float pattern.
    def seed(model, batch, start, flags, pattern, fmt=0, quality=0):
        # fmt: 0 "", 1 png, 2 jpeg, 3 raw, 4 unknown; quality goes in byte 5
        # (start then uses byte 2 only, see fuzz_infer.c).
        start_bytes = bytearray(struct.pack("<i", start))
        if not flags & 1:
            start_bytes[3] = quality & 0xFF
        return bytes([model, batch + 1 + 7 * fmt]) + bytes(start_bytes) + bytes([flags]) + floats(pattern)
    s = {}
    s["demo_b1"] = seed(0, 1, 0, 0, [0.5, 0.25])
    s["demo_b3_shared_audio"] = seed(0, 3, 7, 3 << 4, [0.1, 0.9, 0.4])
    s["pingpong_b4"] = seed(1, 4, 5, 0, [0.7])
    s["fixed_batch_b2"] = seed(2, 2, 1, 0x80, [0.3, -2.0])
    s["huge_values"] = seed(0, 1, 0, 0, [1e30, -1e30, 3e38])
    s["nan"] = seed(0, 1, 0, 0, [float("nan")])
    s["short_visual"] = seed(0, 2, 0, 4 << 1, [0.5])
    s["missing"] = seed(3, 1, 0, 0, [0.5])
    s["raw_start"] = seed(1, 1, 2**31 - 1, 1, [0.5])
    s["jpeg_q40"] = seed(0, 2, 3, 0, [0.5, 0.6], fmt=2, quality=40)
    s["raw_format"] = seed(2, 1, 1, 0, [0.2], fmt=3)
    s["bad_format"] = seed(0, 1, 0, 0, [0.5], fmt=4)
    return s


def pngenc_seeds():
    # See fuzz_pngenc.c: w-1, h-1, level, band start, band rows, mode; pixels.
    import math
    import random
    r = random.Random(1)
    s = {}
    s["photo"] = bytes([40, 30, 1, 5, 12, 0]) + bytes(
        (128 + int(20 * math.sin(i * 0.05)) + r.randint(-3, 3)) & 255 for i in range(600))
    s["runs"] = bytes([95, 63, 2, 10, 40, 1]) + bytes([200, 7, 3, 9, 100, 250, 1, 1])
    s["noise"] = bytes([17, 9, 0, 0, 9, 0]) + bytes(r.randrange(256) for _ in range(2000))
    return s


# ---------------------------------------------------------------- wav

def wav_seeds():
    # See fuzz_wav.c: whole WAV files, small (a few hundred frames).
    import math

    def chunk(cid, payload):
        return cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")

    def fmt(tag, ch, rate, bits):
        return chunk(b"fmt ", struct.pack("<HHIIHH", tag, ch, rate, rate * ch * bits // 8, ch * bits // 8, bits))

    def fmt_ext(sub, ch, rate, bits):
        guid = struct.pack("<H", sub) + bytes([0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71])
        return chunk(b"fmt ", struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * ch * bits // 8, ch * bits // 8,
                                          bits, 22, bits, 3 if ch == 2 else 4) + guid)

    def riff(*chunks):
        body = b"WAVE" + b"".join(chunks)
        return b"RIFF" + struct.pack("<I", len(body)) + body

    def s16(n, ch, f, rate):
        return b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * f * i / rate)) + c * 100)
                        for i in range(n) for c in range(ch))

    def f32(n, f, rate):
        return b"".join(struct.pack("<f", 0.5 * math.sin(2 * math.pi * f * i / rate)) for i in range(n))
    s = {}
    s["pcm16_mono_16k.wav"] = riff(fmt(1, 1, 16000, 16), chunk(b"data", s16(400, 1, 440, 16000)))
    s["pcm16_stereo_44k.wav"] = riff(fmt(1, 2, 44100, 16), chunk(b"data", s16(300, 2, 1000, 44100)))
    s["pcm16_8k.wav"] = riff(fmt(1, 1, 8000, 16), chunk(b"data", s16(300, 1, 300, 8000)))
    s["float32_48k.wav"] = riff(fmt(3, 1, 48000, 32), chunk(b"data", f32(300, 2000, 48000)))
    s["ext_pcm16.wav"] = riff(fmt_ext(1, 2, 22050, 16), chunk(b"data", s16(200, 2, 500, 22050)))
    s["ext_float32.wav"] = riff(fmt_ext(3, 1, 16000, 32), chunk(b"data", f32(200, 700, 16000)))
    s["list_odd_chunks.wav"] = riff(chunk(b"junk", b"abc"), fmt(1, 1, 16000, 16),
                                    chunk(b"LIST", b"INFOISFT\x05\0\0\0lavf\0"),
                                    chunk(b"data", s16(100, 1, 440, 16000)), chunk(b"id3 ", b"x"))
    streamed = riff(fmt(1, 1, 16000, 16)) + b"data" + struct.pack("<I", 0xFFFFFFFF) + s16(300, 1, 440, 16000)
    s["streamed.wav"] = streamed[:4] + struct.pack("<I", 0xFFFFFFFF) + streamed[8:-1]
    s["truncated_fmt.wav"] = riff(fmt(1, 1, 16000, 16))[:30]
    s["adpcm.wav"] = riff(fmt(2, 1, 16000, 4), chunk(b"data", bytes(64)))
    return s


def session_seeds():
    """fuzz_session's records: [kind][length LE 2][payload] (fuzz_session.c)."""
    def rec(kind, payload=b""):
        return bytes([kind]) + struct.pack("<H", len(payload)) + payload

    def start(model=0, enc=0, rate=0, channels=1, fmt=1, batch=2, start_idx=1, quality=1):
        return rec(1, bytes([model, enc, rate, channels, fmt, batch, start_idx, quality]))

    def audio(nbytes, pattern, keyframe=False):
        return rec(3 if keyframe else 2, struct.pack("<H", nbytes) + pattern)

    # A quiet-loud pattern of s16le samples, so the mel frames differ.
    speech = b"".join(struct.pack("<h", v) for v in (0, 3000, 9000, 3000, 0, -3000, -9000, -3000))
    return {
        "jpeg_two_chunks": start() + audio(20000, speech) + audio(14000, speech[::-1]) + rec(4),
        "h264_keyframe": start(fmt=4, batch=4) + audio(16000, speech) + audio(16000, speech, True) + rec(4),
        "raw_half_close": start(fmt=2, batch=1, start_idx=5) + audio(30000, speech) + rec(5),
        "f32_stereo": start(enc=1, channels=2, fmt=3) + audio(32000, b"\x00\x00\x00\x3f\x00\x00\x00\xbf") + rec(4),
        "cancel_mid": start() + audio(20000, speech) + rec(6),
        "client_gone": start() + rec(7) + audio(30000, speech) + rec(4),
        "audio_first": audio(3200, speech) + start() + rec(4),
        "two_starts": start() + start() + rec(4),
        "mute_model": start(model=1) + audio(20000, speech) + rec(4),
        "raw_bytes": rec(0, b"\x0a\x12\x0a\x04talk\x2a\x05s16le\x30\x80\x7d\x38\x01") + audio(8000, speech)
                     + rec(4),
    }


def main():
    for name, text in CONFIGS.items():
        put("config", name, text)
    for name, text in CROPRECTS.items():
        put("croprects", name, text)
    for name, data in images().items():
        put("image", name, data)
    for name, data in jpegs().items():
        put("image", name, data)
    for name, data in service_seeds().items():
        put("service", name, data)
    for name, data in wire_seeds().items():
        put("wire", name, data)
    for name, data in infer_seeds().items():
        put("infer", name, data)
    for name, data in pngenc_seeds().items():
        put("pngenc", name, data)
    for name, data in wav_seeds().items():
        put("wav", name, data)
    for name, data in session_seeds().items():
        put("session", name, data)
    for t in sorted(os.listdir(OUT)):
        d = os.path.join(OUT, t)
        sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)]
        print("%-10s %3d seeds, largest %d bytes" % (t, len(sizes), max(sizes)))


if __name__ == "__main__":
    main()
