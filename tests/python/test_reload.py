"""Config reload on SIGHUP: models added, removed and changed without a
restart; an invalid new config keeps the old one and says why in the log."""

import os
import signal
import time
import unittest

import grpc

import lstest
from lstest import demo_model_config


class TestReload(lstest.ServerTestCase):
    MODELS = {
        "keep": demo_model_config("demo", num_frames=5),
        "change": demo_model_config("demo", num_frames=5),
        "drop": demo_model_config("demo", num_frames=5),
    }

    def write_config(self, models, broken=False):
        text = lstest.config_yaml(self.server.addr, None, None, models)
        if broken:
            text += "capacity:\n  eviction_policy: fifo\n"
        with open(self.server.config_path, "w") as f:
            f.write(text)

    def hup_and_wait(self, log_needle):
        before = self.log_text()
        self.server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(log_needle) > before.count(log_needle):
                return text
            time.sleep(0.05)
        self.fail("no '%s' in the log after SIGHUP\n%s" % (log_needle, self.server.log_tail()))

    def log_text(self):
        with open(self.server.log_path, "r", errors="replace") as f:
            return f.read()

    def infer(self, model):
        return lstest.ServerTestCase.infer_bytes(self, model, lstest.make_visual(1), lstest.make_audio([0.5]), 1)

    def ids(self):
        return sorted(m.model_id for m in self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=10).models)

    def test_1_add_remove_change(self):
        for m in ("keep", "change", "drop"):
            self.assertTrue(self.infer(m).success)
        stats = {m.model_id: m for m in self.stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=10).models}
        self.assertEqual(stats["change"].stats.load_count, 1)

        self.write_config({
            "keep": demo_model_config("demo", num_frames=5),
            "change": demo_model_config("demo", num_frames=7),
            "added": demo_model_config("demo", num_frames=5),
        })
        self.hup_and_wait("config reloaded")
        self.assertEqual(self.ids(), ["added", "change", "keep"])
        with self.assertRaises(grpc.RpcError) as cm:
            self.infer("drop")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertTrue(self.infer("added").success)
        models = {m.model_id: m for m in self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=10).models}
        self.assertEqual(models["keep"].state, "loaded", "an unchanged model stays loaded")
        self.assertEqual(models["change"].state, "unloaded", "a changed model is unloaded")
        resp = self.infer("change")
        self.assertTrue(resp.model_loaded, "a changed model reloads on next use")
        models = {m.model_id: m for m in self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=10).models}
        self.assertEqual(models["change"].num_frames, 7)

    def test_2_invalid_config_keeps_the_old_one(self):
        before = self.ids()
        self.write_config({"only": demo_model_config("demo")}, broken=True)
        text = self.hup_and_wait("keeping the old config")
        self.assertIn("eviction_policy", text.split("keeping the old config")[-1].splitlines()[0])
        self.assertEqual(self.ids(), before)
        self.assertTrue(self.infer(before[0]).success)


if __name__ == "__main__":
    unittest.main()
