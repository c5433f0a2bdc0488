#!/usr/bin/env python3
"""Generate the demo avatar and models lipsyncd serves out of the box.

    python3 tools/gen_demo.py --out build/demo

writes
    models/demo.onnx            dynamic batch, inputs visual_input / audio_input
    models/demo_b1.onnx         same function, batch fixed at 1, inputs input / audio,
                                opset 11 (the shape of real exported models)
    models/demo_encoder.onnx    the audio encoder: mel window [N,1,80,16] -> [N,512]
    speech.wav                  demo speech, spoken by espeak-ng (22050 Hz mono PCM16)
    avatar/frames/frame_NNNN.png  50 frames 1280x720 RGB
    avatar/crop_rects.json      {"0": {"rect": [x1,y1,x2,y2], "original_path": ..}, ..}
    avatar/crop_rects_list.json [[x1,y1,x2,y2], ..]  (same rectangles)
    demo.yaml                   the config serving `demo` and `demo_b1`

Nothing binary lives in the repository: the build runs this (CMake target
`demo`). Output is deterministic (no randomness, fixed zlib level), so
re-running gives the same bytes. Only numpy, onnx and the standard library are
used. demo.yaml is written last, atomically, because it is the build's
witness that the directory is complete.

The model's function lives in tools/demo_model.py (shared with the tests);
this file draws the background video.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_model  # noqa: E402
import pngio  # noqa: E402

FRAME_W, FRAME_H = 1280, 720
NUM_FRAMES = 50


def _sig(d, width):
    """Soft step: 0 -> 1 as d goes from negative to positive, `width` px wide."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / width, -60, 60)))


def _ellipse(xx, yy, cx, cy, rx, ry, width=2.0):
    """Soft ellipse mask: the same drawing primitive as the demo face."""
    return demo_model._soft_ellipse(xx, yy, cx, cy, rx, ry, width)


def _box(xx, yy, x1, y1, x2, y2, width=2.0):
    return (_sig(xx - x1, width) * _sig(x2 - xx, width) *
            _sig(yy - y1, width) * _sig(y2 - yy, width))


def _paint(img, mask, rgb):
    m = mask[..., None].astype(np.float32)
    img *= 1.0 - m
    img += m * np.asarray(rgb, dtype=np.float32)


def static_scene():
    """The room, identical in every frame: a warm wall with a vertical light
    gradient, a bright window, a shelf, a plant and a desk edge. Float32 RGB
    in [0,1], H x W x 3."""
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    t = yy / FRAME_H
    # Wall lit from the window on the left: brighter left/top, a vignette.
    light = 1.0 - 0.25 * t - 0.15 * (xx / FRAME_W)
    vignette = 1.0 - 0.18 * (((xx - 640) / 700) ** 2 + ((yy - 360) / 500) ** 2)
    img = np.stack([0.80 * light * vignette, 0.75 * light * vignette,
                    0.68 * light * vignette], axis=-1).astype(np.float32)
    # Window: frame, bright sky gradient, cross bars.
    _paint(img, _box(xx, yy, 70, 80, 340, 440, 1.2), (0.93, 0.92, 0.90))
    sky = _box(xx, yy, 86, 96, 324, 424, 1.0)
    sky_rgb = np.stack([0.70 + 0.2 * t, 0.82 + 0.12 * t, 0.97 + 0 * t], axis=-1)
    img = img * (1 - sky[..., None]) + sky_rgb * sky[..., None]
    _paint(img, _box(xx, yy, 200, 96, 210, 424, 0.8), (0.90, 0.89, 0.87))
    _paint(img, _box(xx, yy, 86, 255, 324, 265, 0.8), (0.90, 0.89, 0.87))
    # Light falling from the window on the wall.
    img += 0.06 * _ellipse(xx, yy, 420, 360, 260, 300, 60)[..., None]
    # Shelf with a few books on the right.
    _paint(img, _box(xx, yy, 930, 250, 1210, 264, 0.8), (0.45, 0.30, 0.20))
    for i, (h, rgb) in enumerate([(80, (0.55, 0.15, 0.15)), (70, (0.15, 0.35, 0.55)),
                                  (90, (0.20, 0.45, 0.25)), (60, (0.75, 0.60, 0.20))]):
        x1 = 960 + i * 34
        _paint(img, _box(xx, yy, x1, 250 - h, x1 + 28, 250, 0.8), rgb)
    # Plant: pot and soft leaves.
    _paint(img, _box(xx, yy, 1080, 520, 1160, 610, 1.0), (0.55, 0.35, 0.25))
    for cx, cy, rx, ry in [(1120, 470, 60, 45), (1080, 430, 40, 55), (1160, 425, 38, 60),
                           (1120, 395, 30, 50)]:
        _paint(img, _ellipse(xx, yy, cx, cy, rx, ry, 1.5), (0.22, 0.45, 0.20))
    # Desk edge at the bottom.
    desk = _sig(yy - 640, 1.0)
    desk_rgb = np.stack([0.42 - 0.1 * (t - 0.9), 0.28 - 0.05 * t, 0.18 + 0 * t], axis=-1)
    img = img * (1 - desk[..., None]) + desk_rgb * desk[..., None]
    return img


def head_pose(i, n):
    """Face centre and crop side for frame i: a slow sway and nod, the crop
    square growing and shrinking between 171 and 189 px."""
    t = 2.0 * math.pi * i / n
    fx = 640 + 24 * math.sin(t) + 6 * math.sin(3 * t)
    fy = 300 + 10 * math.sin(2 * t + 0.5)
    side = 180 + int(round(9 * math.cos(t)))
    return fx, fy, side


def crop_rect(i, n):
    fx, fy, side = head_pose(i, n)
    x1 = int(round(fx - side / 2))
    y1 = int(round(fy - side / 2))
    return [x1, y1, x1 + side, y1 + side]


def _paint_ellipse(img, cx, cy, rx, ry, width, rgb, alpha=1.0):
    """Paint a soft ellipse into img (H x W x 3, in place), computing only
    its bounding box (plus the soft edge): this keeps 50 frames fast."""
    pad = 8 * width + 2
    x1, x2 = max(int(cx - rx - pad), 0), min(int(cx + rx + pad) + 1, img.shape[1])
    y1, y2 = max(int(cy - ry - pad), 0), min(int(cy + ry + pad) + 1, img.shape[0])
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    _paint(img[y1:y2, x1:x2], alpha * _ellipse(xx, yy, cx, cy, rx, ry, width), rgb)


def draw_person(img, i, n):
    """Paint the person into img (in place): torso, neck, hair, face with
    eyes, brows, nose and a closed mouth, following head_pose(i)."""
    fx, fy, _ = head_pose(i, n)
    sway = 0.35 * (fx - 640)  # the body follows the head a little
    # Neck first: the sweater's collar covers its lower end.
    x1, y1, x2, y2 = int(fx) - 70, int(fy) + 30, int(fx) + 71, int(fy) + 221
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    _paint(img[y1:y2, x1:x2], _box(xx, yy, fx - 42, fy + 60, fx + 42, fy + 190, 2),
           (0.78, 0.58, 0.47))
    # Torso and shoulders (a dark sweater), lit from the left (the window).
    bx1, bx2, by1 = 330 + int(sway), 951 + int(sway), 440
    sub = img[by1:, bx1:bx2]
    yy, xx = np.mgrid[by1:FRAME_H, bx1:bx2].astype(np.float32)
    torso = _ellipse(xx, yy, 640 + sway, 700, 290, 240, 1.5)
    shade = 1.0 - 0.25 * np.clip((xx - 400) / 500, 0, 1)
    sweater = np.stack([0.16 * shade, 0.21 * shade, 0.36 * shade], axis=-1)
    sub[:] = sub * (1 - torso[..., None]) + sweater * torso[..., None]
    # Hair behind and above the face.
    _paint_ellipse(img, fx, fy - 22, 104, 124, 1.5, (0.23, 0.16, 0.11))
    # Face: skin oval, darker towards the rim so it reads as round.
    x1, y1, x2, y2 = int(fx) - 100, int(fy) - 115, int(fx) + 101, int(fy) + 130
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    sub = img[y1:y2, x1:x2]
    rim = np.clip(((xx - fx) / 85) ** 2 + ((yy - fy - 6) / 108) ** 2, 0, 1)
    face = _ellipse(xx, yy, fx, fy + 6, 85, 108, 1.2)
    skin = np.stack([0.86 * (1 - 0.15 * rim), 0.67 * (1 - 0.15 * rim),
                     0.55 * (1 - 0.15 * rim)], axis=-1)
    sub[:] = sub * (1 - face[..., None]) + skin * face[..., None]
    for ex in (fx - 30, fx + 30):
        _paint_ellipse(img, ex, fy - 32, 19, 4, 1.2, (0.24, 0.16, 0.11))
        _paint_ellipse(img, ex, fy - 16, 14, 7, 1.2, (0.95, 0.95, 0.93))
        _paint_ellipse(img, ex + 1, fy - 16, 5.5, 5.5, 1.0, (0.25, 0.17, 0.10))
    _paint_ellipse(img, fx, fy + 14, 9, 18, 3, (0.62, 0.45, 0.36), alpha=0.35)
    _paint_ellipse(img, fx, fy + 48, 30, 8, 1.2, (0.72, 0.36, 0.36))
    _paint_ellipse(img, fx, fy + 48, 25, 1.2, 0.8, (0.35, 0.12, 0.12), alpha=0.7)


def to_u8(img):
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_frames(out_dir, n):
    frames_dir = os.path.join(out_dir, "avatar", "frames")
    os.makedirs(frames_dir, exist_ok=True)
    names = ["frame_%04d.png" % i for i in range(n)]
    # Re-runs with another frame count must not leave stale frames behind:
    # the server serves every frame it finds.
    for old in os.listdir(frames_dir):
        if old.endswith(".png") and old not in names:
            os.remove(os.path.join(frames_dir, old))
    scene = static_scene()
    for i, name in enumerate(names):
        img = scene.copy()
        draw_person(img, i, n)
        pngio.write_png(os.path.join(frames_dir, name), to_u8(img), level=1, filter_type=2)
    return names


def write_text(path, text):
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_rects(out_dir, names):
    """The same rectangles in two of the forms real avatar data uses: keyed by
    frame index (one entry per line, like the reference tooling writes) and a
    plain list."""
    n = len(names)
    rects = [crop_rect(i, n) for i in range(n)]
    keyed = ",\n".join(
        " %s: %s" % (json.dumps(str(i)),
                     json.dumps({"rect": r, "original_path": "avatar/frames/" + names[i]}))
        for i, r in enumerate(rects))
    write_text(os.path.join(out_dir, "avatar", "crop_rects.json"), "{\n" + keyed + "\n}\n")
    plain = ",\n".join(" " + json.dumps(r) for r in rects)
    write_text(os.path.join(out_dir, "avatar", "crop_rects_list.json"), "[\n" + plain + "\n]\n")


def write_models(out_dir):
    import onnx
    models_dir = os.path.join(out_dir, "models")
    os.makedirs(models_dir, exist_ok=True)
    dynamic = demo_model.build_model(batch=None, visual_name="visual_input",
                                     audio_name="audio_input", opset=17, ir_version=8)
    # Real exports of this model family are opset 11, batch 1, with the
    # inputs named `input` and `audio`.
    fixed = demo_model.build_model(batch=1, visual_name="input", audio_name="audio",
                                   opset=11, ir_version=6)
    onnx.save(dynamic, os.path.join(models_dir, "demo.onnx"))
    onnx.save(fixed, os.path.join(models_dir, "demo_b1.onnx"))
    onnx.save(demo_model.build_encoder(), os.path.join(models_dir, "demo_encoder.onnx"))


SPEECH_TEXT = ("Hello! I am the lipsyncd demo avatar. The server turns my speech into mel features, "
               "runs the audio encoder, and moves my mouth with every word you hear.")


def write_speech(out_dir):
    """Demo speech with Debian's espeak-ng (scripts/setup.sh installs it).
    espeak-ng's output for a fixed text and voice is deterministic."""
    import shutil
    import subprocess
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SystemExit("gen_demo: espeak-ng not found (apt-get install espeak-ng; scripts/setup.sh does)")
    path = os.path.join(out_dir, "speech.wav")
    subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", path + ".tmp", SPEECH_TEXT], check=True)
    os.replace(path + ".tmp", path)


DEMO_YAML = """\
# lipsyncd demo configuration, generated by tools/gen_demo.py.
# Paths are relative to this file.
server:
  listen: "0.0.0.0:50053"
models:
  demo:
    model_path: models/demo.onnx
    background_dir: avatar/frames
    crop_rects_path: avatar/crop_rects.json
    preload: true
    audio_encoder:
      model_path: models/demo_encoder.onnx
      kind: ave
  demo_b1:
    # Fixed batch 1 (like real opset-11 exports): larger batches run in chunks.
    model_path: models/demo_b1.onnx
    background_dir: avatar/frames
    crop_rects_path: avatar/crop_rects_list.json
    preload: false
    audio_encoder:
      model_path: models/demo_encoder.onnx
http:
  speech_wav: speech.wav     # the demo page's speech, served at /speech.wav
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--frames", type=int, default=NUM_FRAMES, help="number of frames")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    t0 = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    write_models(out)
    write_speech(out)
    names = write_frames(out, args.frames)
    write_rects(out, names)
    yaml_path = os.path.join(out, "demo.yaml")
    write_text(yaml_path, DEMO_YAML)
    print("gen_demo: wrote %s (%d frames) in %.1f s" % (out, len(names), time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
