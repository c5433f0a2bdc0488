"""The audio front end (src/media/audio.c, src/media/mel.c) against an independent numpy
implementation of the recipe in src/media/mel.h, through the lsmel tool
(tools/mel_dump.c); no server needed.

The numpy side is written from the recipe's formulas, not from the C code:
float64 throughout, the frames cut out of an explicitly padded array, the STFT
by np.fft.rfft, the Slaney mel basis from its definition, the windows by
slicing padded arrays. Both sides get the same 16 kHz samples (for WAV input,
the C decoder's own output, dumped by lsmel --samples); the resampler is
checked on its own against an FFT band-limited resampling of the same speech.

Signals: speech from espeak-ng (a 22050 Hz WAV, so decoding and resampling
run too), silence, a full-scale sine, clipped noise, 1, 200 and 201 samples.
Tolerance: 1e-3 on the normalised features ([-4, 4]).

Environment (set by ctest): LSMEL, the tool; else LS_BUILD_DIR/lsmel.
"""

import os
import shutil
import subprocess
import tempfile
import unittest
import wave

import numpy as np

SOURCE_DIR = os.environ.get("LS_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD_DIR = os.environ.get("LS_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
LSMEL = os.environ.get("LSMEL") or os.path.join(BUILD_DIR, "lsmel")
TOL = 1e-3
SPEECH = ("The quick brown fox jumps over the lazy dog. "
          "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.")

# ---------------------------------------------------------------- reference

SR, NFFT, HOP, NMELS, FMIN, FMAX = 16000, 800, 200, 80, 55.0, 7600.0


def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + 27.0 * np.log(np.maximum(f, 1e-9) / 1000.0) / np.log(6.4))


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def slaney_basis():
    freqs = np.arange(NFFT // 2 + 1) * SR / NFFT
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), NMELS + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - left) / (centre - left)
    falling = (right - freqs[None, :]) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (right - left))


BASIS = slaney_basis()
HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(NFFT) / NFFT)  # periodic


def mel_ref(x):
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    y[1:] = x[1:] - 0.97 * x[:-1]
    padded = np.concatenate([np.zeros(NFFT // 2), y, np.zeros(NFFT // 2)])
    t = 1 + len(x) // HOP
    idx = HOP * np.arange(t)[:, None] + np.arange(NFFT)[None, :]
    mag = np.abs(np.fft.rfft(padded[idx] * HANN, axis=1))
    mel = mag @ BASIS.T
    s = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (s + 100) / 100 - 4, -4, 4)


def enc_windows_ref(mel):
    t = len(mel)
    n = int((t - 16) / 80.0 * 25) + 2
    out = []
    for k in range(n):
        start = int(80 * k // 25)
        chunk = mel[start:start + 16] if start + 16 <= t else mel[t - 16:]
        out.append(chunk.T)
    return np.stack(out)  # [N, 80, 16]


def feat_windows_ref(feat):
    padded = np.concatenate([feat[:1], feat, feat[-1:]])  # N + 2 rows
    z = np.zeros((8, feat.shape[1]))
    framed = np.concatenate([z, padded, z])
    return np.stack([framed[i:i + 16] for i in range(len(padded))])  # [N + 2, 16, 512]


# ---------------------------------------------------------------- helpers

def need_tools():
    if not os.path.exists(LSMEL):
        raise unittest.SkipTest("lsmel not built: %s" % LSMEL)


class Tmp:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lsmel-")

    def path(self, name):
        return os.path.join(self.dir, name)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def lsmel(*args, check=True):
    p = subprocess.run([LSMEL] + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError("lsmel %s failed: %s" % (" ".join(map(str, args)), p.stderr))
    return p


def load(path, shape_tail=()):
    a = np.fromfile(path, dtype="<f4")
    return a.reshape((-1,) + tuple(shape_tail)) if shape_tail else a


def speech_wav(tmp):
    espeak = shutil.which("espeak-ng")
    if not espeak:
        raise AssertionError("espeak-ng not found (scripts/setup.sh installs it)")
    path = tmp.path("speech.wav")
    subprocess.run([espeak, "-w", path, SPEECH], check=True, timeout=60)
    return path


def read_wav(path, raw=False):
    """Mono 16-bit WAV -> (samples as int16 if raw else float in [-1, 1], rate)."""
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (x if raw else x / 32768.0), w.getframerate()


# ---------------------------------------------------------------- tests

class TestMel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need_tools()
        cls.tmp = Tmp()
        cls.wav = speech_wav(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.close()

    def check_f32(self, x, what):
        x = np.asarray(x, dtype=np.float32)
        path = self.tmp.path("x.f32")
        x.tofile(path)
        mel_path = self.tmp.path("mel.f32")
        lsmel(path, "--f32", "--mel", mel_path)
        got = load(mel_path, (80,))
        want = mel_ref(x)
        self.assertEqual(got.shape, want.shape, what)
        err = float(np.max(np.abs(got - want)))
        print("%s: %d samples, T=%d, max |C - numpy| = %.2e" % (what, len(x), len(got), err))
        self.assertLessEqual(err, TOL, what)
        return got

    def test_speech(self):
        with wave.open(self.wav, "rb") as w:
            self.assertEqual(w.getframerate(), 22050, "espeak-ng writes 22050 Hz")
        s_path, m_path = self.tmp.path("speech16k.f32"), self.tmp.path("speech_mel.f32")
        lsmel(self.wav, "--samples", s_path, "--mel", m_path)
        x = load(s_path)
        got, want = load(m_path, (80,)), mel_ref(x)
        err = float(np.max(np.abs(got - want)))
        print("speech: %.2f s, T=%d, max |C - numpy| = %.2e, mean %.2e"
              % (len(x) / SR, len(got), err, float(np.mean(np.abs(got - want)))))
        self.assertEqual(got.shape, want.shape)
        self.assertLessEqual(err, TOL)
        self.assertGreater(float(got.max()), 0.0, "speech reaches loud bins")

    def test_silence(self):
        got = self.check_f32(np.zeros(16000), "silence")
        self.assertTrue(np.all(got == -4.0))

    def test_full_scale_sine(self):
        n = np.arange(16000)
        self.check_f32(np.sin(2 * np.pi * 1000 * n / SR), "full-scale 1 kHz sine")
        self.check_f32(np.sin(2 * np.pi * 123.4 * n / SR), "full-scale 123.4 Hz sine")

    def test_clipped_noise(self):
        rng = np.random.default_rng(12)
        self.check_f32(np.clip(rng.uniform(-2, 2, 16000), -1, 1), "clipped noise")

    def test_tiny(self):
        rng = np.random.default_rng(3)
        for n in (1, 200, 201):
            self.check_f32(rng.uniform(-1, 1, n), "%d samples" % n)
        self.check_f32(np.array([1.0]), "one full-scale sample")

    def test_resampler(self):
        # 22050 -> 16000: the C output against band-limited FFT resampling of
        # the same samples, both low-passed to 7 kHz (below soxr's transition
        # band). The speech is cut to a multiple of 441 samples so that both
        # sample grids coincide exactly (n * 16000 / 22050 whole).
        x16, rate = read_wav(self.wav, raw=True)
        self.assertEqual(rate, 22050)
        x16 = x16[:len(x16) // 441 * 441]
        cut = self.tmp.path("cut.wav")
        with wave.open(cut, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(x16.astype("<i2").tobytes())
        s_path = self.tmp.path("cut16k.f32")
        lsmel(cut, "--samples", s_path)
        got = load(s_path).astype(np.float64)
        x = x16 / 32768.0
        m = len(x) * 320 // 441
        self.assertEqual(len(got), m, "output length n * 16000 / 22050")
        ref = np.fft.irfft(np.fft.rfft(x)[:len(x) * 8000 // rate], n=m) * (m / len(x))

        def lowpass(v):
            f = np.fft.rfft(v)
            f[int(7000 * len(v) / SR):] = 0
            return np.fft.irfft(f, n=len(v))
        a, b = lowpass(got), lowpass(ref)
        snr = 10 * np.log10(np.sum(b ** 2) / np.sum((a - b) ** 2))
        print("resampler: 22050 -> 16000 Hz, %d -> %d samples, SNR below 7 kHz %.1f dB" % (len(x), m, snr))
        self.assertGreater(snr, 80.0)


class TestWindows(unittest.TestCase):
    """Encoder windows and U-Net windows around a linear stand-in encoder."""

    @classmethod
    def setUpClass(cls):
        need_tools()
        cls.tmp = Tmp()
        cls.wav = speech_wav(cls.tmp)
        rng = np.random.default_rng(5)
        cls.w = (rng.standard_normal((80 * 16, 512)) / np.sqrt(80 * 16)).astype(np.float32)
        cls.w_path = cls.tmp.path("encoder.f32")
        cls.w.tofile(cls.w_path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.close()

    def run_case(self, src, kind_args, what):
        t = self.tmp.path
        lsmel(src, *kind_args, "--mel", t("m.f32"), "--windows", t("w.f32"),
              "--encoder", self.w_path, "--feat", t("f.f32"))
        mel = load(t("m.f32"), (80,))
        win = load(t("w.f32"), (80, 16))
        feat = load(t("f.f32"), (16, 512))
        want_win = enc_windows_ref(mel.astype(np.float64))
        n = len(want_win)
        self.assertEqual(win.shape, want_win.shape, what)
        np.testing.assert_array_equal(win, want_win.astype(np.float32), what)
        enc = want_win.reshape(n, -1) @ self.w.astype(np.float64)
        want_feat = feat_windows_ref(enc)
        self.assertEqual(feat.shape, (n + 2, 16, 512), what)
        err = float(np.max(np.abs(feat - want_feat)))
        print("%s: T=%d, N=%d, video frames %d, max |C - numpy| = %.2e" % (what, len(mel), n, n + 2, err))
        self.assertLessEqual(err, 1e-4, what)
        # Both edges: frame 0 starts with 8 zero rows, the last ends with 7.
        self.assertTrue(np.all(feat[0, :8] == 0) and np.all(feat[-1, 9:] == 0), what)
        np.testing.assert_array_equal(feat[0, 8], feat[0, 9])  # first row repeated
        # Ranges equal the slices of the whole.
        for first, count in ((0, 3), (n - 1, 3), (n // 2, 1)):
            lsmel(src, *kind_args, "--encoder", self.w_path, "--feat", t("r.f32"),
                  "--feat-range", first, count, "--windows", t("wr.f32"), "--win-range", min(first, n - 1), 1)
            np.testing.assert_array_equal(load(t("r.f32"), (16, 512)), feat[first:first + count], what)
            np.testing.assert_array_equal(load(t("wr.f32"), (80, 16)), win[min(first, n - 1):min(first, n - 1) + 1])
        return n

    def test_speech(self):
        self.run_case(self.wav, (), "speech")

    def test_short_edges(self):
        # T = 16 (3000..3199 samples) is the shortest; 17 and 19 make the last start clamp.
        rng = np.random.default_rng(9)
        for n_samples, want_n in ((3000, 2), (3200, 2), (3800, 3), (4600, 4)):
            x = rng.uniform(-0.5, 0.5, n_samples).astype(np.float32)
            p = self.tmp.path("short.f32")
            x.tofile(p)
            self.assertEqual(self.run_case(p, ("--f32",), "%d samples" % n_samples), want_n)

    def test_too_short(self):
        p = self.tmp.path("tiny.f32")
        np.zeros(2999, np.float32).tofile(p)
        r = lsmel(p, "--f32", "--windows", self.tmp.path("x.f32"), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: audio too short: 15 mel frames, need at least 16", r.stderr)


if __name__ == "__main__":
    unittest.main()
