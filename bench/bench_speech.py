#!/usr/bin/python3
"""Speech in, end to end through the server (demo model and demo encoder), each
against a peer measured in the same run:

1. Features of 10 s of speech (mel + audio encoder): the server's
   feature_time_ms of ExtractAudioFeatures against numpy doing the same in
   this process (the float64 reference recipe of tests/python/test_mel.py,
   then the demo encoder's function, tools/demo_model.encode). Python's ONNX
   Runtime is not packaged for Debian 12, so the encoder peer is its numpy
   twin. Reported per second of audio and per video frame against the 40 ms
   frame budget (target: front end <= 2 %).
2. RenderSpeech of the same 10 s (252 frames, batch 5, PNG): frames/s,
   against real time (25 fps), and time to the first batch, against the same
   frames requested as audio-only InferBatchComposite batches one after the
   other (windows from ExtractAudioFeatures).

    LS_BUILD_DIR=$PWD/build /usr/bin/python3 bench/bench_speech.py [--rounds R]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "python"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import demo_model  # noqa: E402
import lsbench as L  # noqa: E402
import test_mel as ref  # noqa: E402

SECONDS = 10.0


def speech_10s():
    """espeak-ng speech resampled to 16 kHz (numpy FFT), repeated and cut to 10 s."""
    path = os.path.join(L.WORK_DIR, "bench_speech.wav")
    os.makedirs(L.WORK_DIR, exist_ok=True)
    subprocess.run([shutil.which("espeak-ng"), "-w", path, "The quick brown fox jumps over the lazy dog. "
                    "A lip-sync server turns speech into frames, one mel window at a time."], check=True)
    with wave.open(path, "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
    n = int(round(len(x) * 16000 / rate))
    y = np.fft.irfft(np.fft.rfft(x)[:n // 2 + 1], n) * (n / len(x))
    want = int(SECONDS * 16000)
    y = np.tile(y, want // len(y) + 1)[:want]
    return np.clip(y, -1, 1).astype(np.float32)


def numpy_features(x):
    mel = ref.mel_ref(x)
    return demo_model.encode(ref.enc_windows_ref(mel).astype(np.float32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    pb2, _ = L.stubs()
    x = speech_10s()
    cfg = os.path.join(L.DEMO_DIR, "demo.yaml")
    with L.Server("speech", open(cfg).read().replace("models/", os.path.join(L.DEMO_DIR, "models") + "/")
                  .replace("avatar/", os.path.join(L.DEMO_DIR, "avatar") + "/")
                  .replace("speech.wav", os.path.join(L.DEMO_DIR, "speech.wav"))) as srv:
        import grpc
        stub_feat = srv.channel.unary_unary("/multitenant.MultiTenantLipSync/ExtractAudioFeatures",
                                            request_serializer=pb2.AudioFeaturesRequest.SerializeToString,
                                            response_deserializer=pb2.AudioFeaturesResponse.FromString)
        stub_render = srv.channel.unary_stream("/multitenant.MultiTenantLipSync/RenderSpeech",
                                               request_serializer=pb2.RenderSpeechRequest.SerializeToString,
                                               response_deserializer=pb2.RenderSpeechResponse.FromString)
        audio = pb2.AudioInput(pcm=x.astype("<f4").tobytes(), pcm_encoding="f32le", sample_rate=16000, channels=1)
        server_ms, numpy_ms = [], []
        feats = None
        for _ in range(args.rounds):
            r = stub_feat(pb2.AudioFeaturesRequest(model_id="demo", audio=audio), timeout=120)
            server_ms.append(r.feature_time_ms)
            t0 = time.perf_counter()
            np_feat = numpy_features(x)
            numpy_ms.append((time.perf_counter() - t0) * 1e3)
            feats = r
        got = np.frombuffer(feats.encoder_outputs, "<f4").reshape(-1, 512)
        maxdiff = float(np.abs(got - np_feat).max())
        s_ms, n_ms = float(np.median(server_ms)), float(np.median(numpy_ms))
        per_frame = s_ms / (SECONDS * 25)
        print(f"features of {SECONDS:.0f} s of speech (mel + demo encoder, median of {args.rounds}): server "
              f"{s_ms:.2f} ms ({s_ms / SECONDS:.2f} ms per second of audio, {per_frame:.4f} ms per video frame = "
              f"{100 * per_frame / 40:.3f} % of the 40 ms budget); numpy {n_ms:.2f} ms; encoder outputs max |d| "
              f"{maxdiff:.2e}")
        L.ratio_line("speech_features_vs_numpy", s_ms / n_ms, "< 1", s_ms < n_ms)
        L.ratio_line("speech_front_end_share_of_frame_budget", per_frame / 40, "<= 0.02", per_frame / 40 <= 0.02)

        # RenderSpeech against the same frames as unary audio-only requests.
        full = stub_feat(pb2.AudioFeaturesRequest(model_id="demo", audio=audio, include_windows=True), timeout=120)
        win = np.frombuffer(full.windows, "<f4").reshape(-1, 32 * 16 * 16)
        total = full.num_frames
        for _ in range(2):  # warm: every avatar frame prepared, caches filled
            list(stub_render(pb2.RenderSpeechRequest(model_id="demo", audio=audio, batch_size=5), timeout=300))
        t0 = time.perf_counter()
        first = None
        n = 0
        for resp in stub_render(pb2.RenderSpeechRequest(model_id="demo", audio=audio, batch_size=5), timeout=300):
            if first is None:
                first = time.perf_counter() - t0
            n += len(resp.frames)
        render_s = time.perf_counter() - t0
        infer = srv.channel.unary_unary("/multitenant.MultiTenantLipSync/InferBatchComposite",
                                        request_serializer=pb2.CompositeBatchRequest.SerializeToString,
                                        response_deserializer=pb2.CompositeBatchResponse.FromString)
        reqs = [pb2.CompositeBatchRequest(model_id="demo", batch_size=min(5, total - k), start_frame_idx=k,
                                          audio_features=win[k:k + 5].tobytes()) for k in range(0, total, 5)]
        t0 = time.perf_counter()
        m = sum(len(infer(q, timeout=120).composited_frames) for q in reqs)
        unary_s = time.perf_counter() - t0
        if n != total or m != total:
            raise SystemExit(f"frame counts: RenderSpeech {n}, unary {m}, expected {total}")
        print(f"RenderSpeech of {SECONDS:.0f} s ({total} frames, batch 5, png): {total / render_s:.1f} frames/s = "
              f"{total / render_s / 25:.2f}x real time, first batch after {first * 1e3:.0f} ms; the same frames as "
              f"{len(reqs)} audio-only InferBatchComposite calls: {total / unary_s:.1f} frames/s")
        L.ratio_line("render_speech_vs_real_time", total / render_s / 25, ">= 1", total / render_s >= 25)
        L.ratio_line("render_speech_vs_unary_batches", unary_s / render_s, "(info)", True)
        del grpc
    L.save_result("speech", {"machine": L.machine(), "features_server_ms": server_ms, "features_numpy_ms": numpy_ms,
                             "render_s": render_s, "unary_s": unary_s, "first_batch_s": first, "frames": total})


if __name__ == "__main__":
    main()
