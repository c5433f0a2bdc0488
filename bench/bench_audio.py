#!/usr/bin/env python3
"""Audio front end: mel features + window assembly for 10 s of speech, the C
code (src/media/mel.c through lsmel --bench) against numpy doing the same in the
same run. Reported per second of audio and per video frame (40 ms of audio
at 25 fps) against the 40 ms frame budget (target: <= 2 %).

    /usr/bin/python3 bench/bench_audio.py [--build DIR] [--rounds R] [--precision]

Speech: espeak-ng (22050 Hz), decoded and resampled to 16 kHz by the C
decoder, repeated and cut to exactly 10.000 s (160000 samples). Both sides
time: mel [T, 80] from the samples, the encoder windows [N, 80, 16] and the
U-Net windows [N + 2, 16, 512] of a fixed encoder output (the encoder itself is
the model's work, not the front end's). The numpy side is vectorised: one
rfft over all frames, the basis as a dense matmul, windows by fancy indexing.
Also reported, C only: WAV decoding + resampling 22050 -> 16000 (libsoxr HQ)
of the 10 s.

--precision also builds lsmel with FFTW in double (-DLS_MEL_FFT_DOUBLE=1,
libfftw3) in a temporary directory and reports its time and its largest
difference from a float64 numpy reference next to the float build's.

Prints readable lines and a final "RESULT {json}" line.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "python"))
import test_mel as ref  # noqa: E402  (the float64 reference recipe)

TEXT = ("Speech in for the lip sync server. The quick brown fox jumps over the lazy dog, "
        "and she sells sea shells by the sea shore while the band plays on.")
SECONDS = 10.0


class NumpyFrontEnd:
    """The same recipe as src/media/mel.h, vectorised, basis and window made once."""

    def __init__(self):
        self.basis_t = ref.BASIS.T.copy()
        self.hann = ref.HANN

    def mel(self, x):
        y = np.empty_like(x)
        y[0] = x[0]
        y[1:] = x[1:] - np.float32(0.97) * x[:-1]
        padded = np.pad(y, 400)
        t = 1 + len(x) // 200
        frames = np.lib.stride_tricks.as_strided(padded, (t, 800), (padded.strides[0] * 200, padded.strides[0]))
        mag = np.abs(np.fft.rfft(frames * self.hann, axis=1))
        s = 20 * np.log10(np.maximum(1e-5, mag @ self.basis_t)) - 20
        return np.clip(8 * (s + 100) / 100 - 4, -4, 4).astype(np.float32)

    @staticmethod
    def enc_windows(mel):
        t = len(mel)
        n = int((t - 16) / 80.0 * 25) + 2
        starts = np.minimum((80 * np.arange(n)) // 25, t - 16)
        return np.ascontiguousarray(mel[starts[:, None] + np.arange(16)].transpose(0, 2, 1))

    @staticmethod
    def feat_windows(feat):
        framed = np.concatenate([np.zeros((8, feat.shape[1]), feat.dtype), feat[:1], feat, feat[-1:],
                                 np.zeros((8, feat.shape[1]), feat.dtype)])
        return framed[np.arange(len(feat) + 2)[:, None] + np.arange(16)]


def lsmel(binary, *args):
    p = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def build_double(tmp):
    out = os.path.join(tmp, "lsmel_double")
    cc = os.environ.get("CC", "cc")
    srcs = [os.path.join(SRC, p) for p in ("tools/mel_dump.c", "src/media/mel.c", "src/media/audio.c", "src/core/common.c")]
    subprocess.run([cc, "-std=c11", "-O2", "-DNDEBUG", "-DLS_MEL_FFT_DOUBLE=1"]
                   + ["-I" + os.path.join(SRC, "src", layer) for layer in ("core", "media")]
                   + ["-o", out] + srcs + ["-lfftw3", "-lsoxr", "-lpthread", "-lm"], check=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("LS_BUILD_DIR", os.path.join(SRC, "build")))
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--precision", action="store_true")
    a = ap.parse_args()
    binary = os.path.join(a.build, "lsmel")
    tmp = tempfile.mkdtemp(prefix="bench-audio-")
    try:
        wav = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-w", wav, TEXT], check=True)
        with wave.open(wav) as w:
            rate, frames = w.getframerate(), w.getnframes()
        s16k = os.path.join(tmp, "s16k.f32")
        lsmel(binary, wav, "--samples", s16k)
        x = np.fromfile(s16k, "<f4")
        n = int(SECONDS * 16000)
        x = np.tile(x, n // len(x) + 1)[:n].astype(np.float32)
        x10 = os.path.join(tmp, "speech10.f32")
        x.tofile(x10)
        # A 10 s WAV at espeak's rate for the decode timing.
        raw = np.fromfile(wav, np.uint8)[44:].view("<i2")
        raw = np.tile(raw, int(SECONDS * rate) // len(raw) + 1)[:int(SECONDS * rate)]
        wav10 = os.path.join(tmp, "speech10.wav")
        with wave.open(wav10, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(raw.tobytes())

        c = lsmel(binary, x10, "--f32", "--bench", a.rounds)
        dec = lsmel(binary, wav10, "--bench", max(5, a.rounds // 5))
        fe = NumpyFrontEnd()
        rng = np.random.default_rng(1)
        feat = rng.standard_normal((c["windows"], 512)).astype(np.float32)
        t_mel = t_win = 0.0
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            mel = fe.mel(x)
            t1 = time.perf_counter()
            fe.enc_windows(mel)
            fe.feat_windows(feat)
            t_win += time.perf_counter() - t1
            t_mel += t1 - t0
        np_mel, np_win = t_mel / a.rounds, t_win / a.rounds
        cm = os.path.join(tmp, "cmel.f32")
        lsmel(binary, x10, "--f32", "--mel", cm)
        diff_np = float(np.max(np.abs(np.fromfile(cm, "<f4").reshape(-1, 80) - fe.mel(x))))

        per_s = lambda v: 1e3 * v / SECONDS  # noqa: E731  ms per second of audio
        c_total, np_total = c["mel_s"] + c["windows_s"], np_mel + np_win
        frame_ms = per_s(c_total) / 25  # one video frame = 40 ms of audio
        res = {
            "audio_s": SECONDS, "mel_frames": c["frames"], "windows": c["windows"], "video_frames": c["windows"] + 2,
            "rounds": a.rounds,
            "c_mel_ms_per_s": per_s(c["mel_s"]), "c_windows_ms_per_s": per_s(c["windows_s"]),
            "c_total_ms_per_s": per_s(c_total),
            "numpy_mel_ms_per_s": per_s(np_mel), "numpy_windows_ms_per_s": per_s(np_win),
            "numpy_total_ms_per_s": per_s(np_total),
            "speedup_c_over_numpy": np_total / c_total,
            "c_ms_per_video_frame": frame_ms, "frame_budget_pct": 100 * frame_ms / 40.0,
            "c_decode_resample_ms_per_s": per_s(dec["decode_s"]), "decode_input_rate": rate,
            "max_abs_c_minus_numpy": diff_np,
        }
        print("10 s of speech (espeak-ng %d Hz -> 16 kHz): T=%d mel frames, N=%d windows, %d video frames"
              % (rate, c["frames"], c["windows"], c["windows"] + 2))
        print("C     mel %.3f ms/s  windows %.3f ms/s  total %.3f ms/s" % (
            res["c_mel_ms_per_s"], res["c_windows_ms_per_s"], res["c_total_ms_per_s"]))
        print("numpy mel %.3f ms/s  windows %.3f ms/s  total %.3f ms/s" % (
            res["numpy_mel_ms_per_s"], res["numpy_windows_ms_per_s"], res["numpy_total_ms_per_s"]))
        print("C is %.1fx numpy; per video frame %.4f ms = %.2f %% of 40 ms; decode+resample %.3f ms/s (C)"
              % (res["speedup_c_over_numpy"], frame_ms, res["frame_budget_pct"], res["c_decode_resample_ms_per_s"]))
        if a.precision:
            want = ref.mel_ref(x)
            dbl = build_double(tmp)
            for name, b in (("fftwf (float)", binary), ("fftw (double)", dbl)):
                m = os.path.join(tmp, "p.f32")
                lsmel(b, x10, "--f32", "--mel", m)
                err = float(np.max(np.abs(np.fromfile(m, "<f4").reshape(-1, 80) - want)))
                t = lsmel(b, x10, "--f32", "--bench", a.rounds)["mel_s"]
                key = "double" if "double" in name else "float"
                res["precision_%s_max_abs" % key] = err
                res["precision_%s_mel_ms_per_s" % key] = per_s(t)
                print("%s: mel %.3f ms/s, max |C - float64 numpy| = %.2e" % (name, per_s(t), err))
        print("RESULT " + json.dumps(res))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
