"""Memory really comes back: 20 avatars loaded, used and unloaded in turn.

Each avatar is loaded with LoadModel, every one of its frames is prepared by
requests covering them all, and it is unloaded with UnloadModel. All of them
use one ONNX file, and only one is loaded at a time, so each cycle also opens
and closes the ONNX Runtime session. The service calls malloc_trim(0) after
each unload (src/serve/service.c loader_unload), so the server's resident memory
after the last unload must be back near what it was after the first one: a
leak of one avatar's frames (10 x 2.7 MB raw, or their prepared rows) or of a
session per cycle would add up to far more than the allowed 15 %.
"""

import unittest

import numpy as np

import lstest
from lstest import demo_model_config

N_MODELS = 20
N_FRAMES = 10
BATCH = 10  # one request covers the 10 frames
TIMEOUT = lstest.RPC_TIMEOUT_S


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


@unittest.skipIf(lstest.SLOW, "RSS is meaningless under ASan (freed memory stays in its quarantine); "
                 "the normal build runs this test and LeakSanitizer covers leaks")
class TestLoadUnloadTwentyModels(lstest.ServerTestCase):
    MODELS = {"mem%02d" % i: demo_model_config("demo", num_frames=N_FRAMES)
              for i in range(N_MODELS)}
    CAPACITY = {"max_models": 2}

    def test_rss_comes_back_after_unloads(self):
        pid = self.server.proc.pid
        visual = lstest.make_visual(BATCH)
        audio = lstest.make_audio(np.linspace(-1, 1, BATCH))
        loaded_rss, unloaded_rss = [], []
        for i, mid in enumerate(sorted(self.MODELS)):
            r = self.stub.LoadModel(self.pb2.LoadModelRequest(model_id=mid), timeout=TIMEOUT)
            self.assertTrue(r.success, r.error)
            self.assertFalse(r.already_loaded, mid)
            for start in range(0, N_FRAMES, BATCH):
                resp = self.infer_bytes(mid, visual, audio, BATCH, start)
                self.assertTrue(resp.success, resp.error)
                self.assertEqual(len(resp.composited_frames), BATCH)
                self.assertFalse(resp.model_loaded)
            if i == 0:
                # The frames are the ones asked for (once: the rest is the same code).
                want = lstest.expected_frames(visual, audio, start, N_FRAMES)
                rects = lstest.demo_rects()
                for k, png in enumerate(resp.composited_frames):
                    fi, expected = want[k]
                    problem = lstest.compare_frame(lstest.decode_frame(png), expected, rects[fi])
                    self.assertIsNone(problem, "frame %d: %s" % (fi, problem))
            loaded_rss.append(rss_kib(pid))
            u = self.stub.UnloadModel(self.pb2.UnloadModelRequest(model_id=mid), timeout=TIMEOUT)
            self.assertTrue(u.success, u.error)
            self.assertEqual(u.state, "unloaded", mid)
            unloaded_rss.append(rss_kib(pid))
            st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=TIMEOUT)
            self.assertEqual((st.loaded_models, st.total_memory_bytes, st.engine_sessions),
                             (0, 0, 0), "after unloading %s" % mid)
        st = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=TIMEOUT)
        self.assertEqual((st.total_loads, st.total_evictions, st.total_requests),
                         (N_MODELS, 0, N_MODELS * N_FRAMES // BATCH))
        for m in st.models:
            self.assertEqual((m.state, m.stats.load_count, m.stats.usage_count),
                             ("unloaded", 1, N_FRAMES // BATCH), m.model_id)
        trace = "RSS KiB after each unload: %s; while loaded: %s" % (unloaded_rss, loaded_rss)
        # After an unload RSS still wobbles by a few MB (one request's freed
        # buffers left in a thread's heap: 39.6-46 MB over 20 cycles with no
        # trend), which at a 40 MB baseline is itself ~15%. The end state is
        # the median of the last three unloads, so one such wobble does not
        # decide; a real retention raises all three.
        first, last = unloaded_rss[0], sorted(unloaded_rss[-3:])[1]
        self.assertLessEqual(last, first * 1.15,
                             "RSS after the last unloads (median of 3) %d KiB is more than 15%% above the %d "
                             "KiB after the first; %s" % (last, first, trace))
        # And unloading does give memory back (it is not merely flat).
        self.assertLess(last, loaded_rss[0], trace)


if __name__ == "__main__":
    unittest.main()
