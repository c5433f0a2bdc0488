"""Request ids and log formats: every call gets an id, returned in the
x-request-id trailer and present in the log lines the request caused;
--log-format json writes one JSON object per line."""

import json
import unittest

import grpc

import lstest
from lstest import demo_model_config


def trailer(md, key):
    for k, v in md or ():
        if k == key:
            return v
    return None


class LogCase(lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo", num_frames=5)}
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = lstest.LsServer(cls.MODELS, args=cls.ARGS).start()
        cls.pb2, _ = lstest.stubs()
        cls.stub = cls.server.stub

    def failing_call_id(self):
        """A request that fails (unknown model) and so logs a line; returns its id."""
        req = self.pb2.CompositeBatchRequest(model_id="no_such_model", batch_size=1)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.InferBatchComposite(req, timeout=10)
        rid = trailer(cm.exception.trailing_metadata(), "x-request-id")
        self.assertTrue(rid, "no x-request-id trailer")
        return rid

    def log_lines(self):
        with open(self.server.log_path, "r", errors="replace") as f:
            return f.read().splitlines()


class TestTextLogs(LogCase):
    def test_ids_are_unique_and_returned_on_success_too(self):
        _, call = self.stub.ListModels.with_call(self.pb2.ListModelsRequest(), timeout=10)
        ok_id = trailer(call.trailing_metadata(), "x-request-id")
        self.assertTrue(ok_id)
        ids = {self.failing_call_id() for _ in range(5)}
        self.assertEqual(len(ids), 5)
        self.assertNotIn(ok_id, ids)

    def test_id_in_the_requests_log_lines(self):
        rid = self.failing_call_id()
        mine = [l for l in self.log_lines() if "[%s]" % rid in l]
        self.assertTrue(any("no_such_model" in l for l in mine), "\n".join(self.log_lines()[-10:]))


class TestJsonLogs(LogCase):
    ARGS = ("--log-format", "json")

    def test_every_line_is_json_with_the_request_id(self):
        rid = self.failing_call_id()
        objs = [json.loads(l) for l in self.log_lines() if l.strip()]
        self.assertTrue(objs)
        for o in objs:
            self.assertIn(o["level"], ("debug", "info", "warn", "error"))
            self.assertIn("ts", o)
            self.assertIn("msg", o)
        mine = [o for o in objs if o.get("request_id") == rid]
        self.assertTrue(any("no_such_model" in o["msg"] for o in mine))


if __name__ == "__main__":
    unittest.main()
