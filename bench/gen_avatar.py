#!/usr/bin/python3
"""Generate a benchmark avatar: N background frames at 1280x720 made from a
real photograph with small per-frame variations, saved as PNG, plus crop
rectangles.

    /usr/bin/python3 bench/gen_avatar.py --out DIR [--frames 100] [--photo PATH]

Per frame i: the photo (scaled to 1376x774, a little larger than the frame)
is shifted by a slow sub-pixel sway (up to ~3 px, bilinear warp), its
brightness varies by up to 2%, and sensor-like noise (sigma 1 level) is
added; then the 1280x720 centre is kept. This gives frames that differ from
each other the way consecutive frames of a still camera do, so PNG sizes and
decode times are those of real video frames.

Writes DIR/frames/frame_0000.png ... (OpenCV PNG writer, default settings),
DIR/crop_rects.json (a list of [x1, y1, x2, y2]: a 400x400 face box swaying
by a few pixels) and DIR/.complete (the frame count and photo), which lets a
second run reuse the folder.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsbench as L  # noqa: E402

SIDE = 400


def rect(i, n):
    t = 2 * math.pi * i / n
    x1 = 440 + int(round(6 * math.sin(t)))
    y1 = 160 + int(round(4 * math.sin(2 * t + 0.3)))
    return [x1, y1, x1 + SIDE, y1 + SIDE]


def generate(out, frames, photo):
    import cv2
    stamp = f"{frames} {photo}"
    done = os.path.join(out, ".complete")
    if os.path.exists(done) and open(done).read() == stamp:
        return False
    fdir = os.path.join(out, "frames")
    os.makedirs(fdir, exist_ok=True)
    for name in os.listdir(fdir):
        os.remove(os.path.join(fdir, name))
    img = cv2.imread(photo, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {photo}")
    # 16:9 centre crop, scaled slightly larger than the frame
    h, w = img.shape[:2]
    cw, ch = (h * 16 // 9, h) if w * 9 > h * 16 else (w, w * 9 // 16)
    img = img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    big_w, big_h = L.FRAME_W + 96, L.FRAME_H + 54
    base = cv2.resize(img, (big_w, big_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = np.random.default_rng(11)
    for i in range(frames):
        t = 2 * math.pi * i / frames
        dx = 2.5 * math.sin(t) + 0.7 * math.sin(3.1 * t)
        dy = 1.5 * math.sin(2 * t + 0.5)
        m = np.float32([[1, 0, dx - 48], [0, 1, dy - 27]])
        f = cv2.warpAffine(base, m, (L.FRAME_W, L.FRAME_H), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
        f *= 1.0 + 0.02 * math.sin(1.7 * t)
        f += rng.normal(0.0, 1.0, f.shape).astype(np.float32)
        f = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(fdir, f"frame_{i:04d}.png"), f)
    with open(os.path.join(out, "crop_rects.json"), "w") as fh:
        json.dump([rect(i, frames) for i in range(frames)], fh)
    with open(done, "w") as fh:
        fh.write(stamp)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--photo", default=L.PHOTO)
    a = ap.parse_args()
    made = generate(a.out, a.frames, a.photo)
    print(f"avatar: {a.frames} frames in {a.out} ({'generated' if made else 'reused'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
