"""The HTTP listener (src/net/http.c): /healthz, /readyz, /metrics (exact counts
after known traffic, and `promtool check metrics`), gRPC-Web in binary and
text form for every kind of call (results compared with the native gRPC
call, PNG bytes included), its error statuses, CORS, and the static files
(path traversal refused).

The gRPC-Web client here is written from the protocol description: a request
is one 5-byte-prefixed data frame; a response is data frames then one
trailer frame (flag 0x80) holding "grpc-status" / "grpc-message" lines;
the -text variant is the same bytes in base64.
"""

import base64
import hashlib
import http.client
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

import lstest
from lstest import SERVICE, demo_model_config

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


# ---------------------------------------------------------------- client

def frame(payload, flags=0):
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_frames(body):
    """[(flags, payload)] of a gRPC-Web response body; asserts it is whole."""
    out, i = [], 0
    while i < len(body):
        if len(body) - i < 5:
            raise AssertionError("truncated frame header at byte %d of %d" % (i, len(body)))
        flags, n = struct.unpack(">BI", body[i:i + 5])
        if len(body) - i - 5 < n:
            raise AssertionError("truncated frame at byte %d: %d of %d bytes" % (i, len(body) - i - 5, n))
        out.append((flags, body[i + 5:i + 5 + n]))
        i += 5 + n
    return out


class GrpcWebReply:
    def __init__(self, http_status, headers, body, text):
        self.http_status = http_status
        self.headers = headers
        self.raw = body
        if text:
            body = base64.b64decode(body, validate=True)
        frames = parse_frames(body)
        self.messages = [p for f, p in frames if not f & 0x80]
        trailers = [p for f, p in frames if f & 0x80]
        if len(trailers) != 1 or frames[-1][0] != 0x80:
            raise AssertionError("expected exactly one trailer frame, last: %r" % (frames,))
        self.trailers = {}
        for line in trailers[0].decode("ascii").split("\r\n"):
            if line:
                k, v = line.split(":", 1)
                self.trailers[k.strip().lower()] = v.strip()
        self.code = int(self.trailers["grpc-status"])
        self.message = urllib.parse.unquote(self.trailers.get("grpc-message", ""))


def http_request(url, method="GET", body=None, headers=None, timeout=60):
    """(status, headers, body) without raising on HTTP error statuses."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def grpcweb(base_url, method, payload, text=False, headers=None, raw_body=None, timeout=lstest.RPC_TIMEOUT_S):
    body = raw_body if raw_body is not None else frame(payload)
    h = {"Content-Type": "application/grpc-web-text" if text else "application/grpc-web+proto",
         "X-Grpc-Web": "1"}
    if text and raw_body is None:
        body = base64.b64encode(body)
    h.update(headers or {})
    status, rh, rb = http_request("%s/%s/%s" % (base_url, SERVICE, method), "POST", body, h, timeout)
    if status != 200:
        raise AssertionError("HTTP %d: %r" % (status, rb[:200]))
    want = "application/grpc-web-text+proto" if text else "application/grpc-web+proto"
    if rh.get("Content-Type") != want:
        raise AssertionError("content-type %r, expected %r" % (rh.get("Content-Type"), want))
    return GrpcWebReply(status, rh, rb, text)


def raw_get(port, path, method="GET"):
    """A request line sent exactly as given (urllib would normalise '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m:
            raise AssertionError("unparsable metrics line %r" % line)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())))


def infer_request_bytes(model_id, batch, start, visual, audio):
    """CompositeBatchRequest with the tensors as little-endian float32 bytes."""
    bpb2 = lstest.bytes_variant_pb2()
    return bpb2.CompositeBatchRequest(
        model_id=model_id, batch_size=batch, start_frame_idx=start,
        visual_frames=np.asarray(visual, "<f4").tobytes(),
        audio_features=np.asarray(audio, "<f4").tobytes()).SerializeToString()


# ---------------------------------------------------------------- tests

class TestHttpEndpoints(lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo", preload=True),
              "demo_b1": demo_model_config("demo_b1", num_frames=5)}
    CAPACITY = {"max_models": 4}
    HTTP_OPTS = {"cors_origins": ["http://allowed.example:8080"]}

    @property
    def url(self):
        return self.server.http_url

    def test_healthz(self):
        status, _, body = http_request(self.url + "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))

    def test_readyz_after_preload(self):
        status, _, body = http_request(self.url + "/readyz")
        self.assertEqual((status, body), (200, b"ready\n"))

    def test_metrics_promtool(self):
        status, headers, body = http_request(self.url + "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"])
        if not os.access(PROMTOOL, os.X_OK):
            self.fail("promtool not found (%s): scripts/setup.sh installs Debian's prometheus package" % PROMTOOL)
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, "promtool: %s%s\n%s" % (p.stdout.decode(), p.stderr.decode(),
                                                                  body.decode()[:3000]))
        ms = parse_metrics(body.decode())
        for name in ("lipsync_models_loaded", "lipsync_models_max", "lipsync_memory_bytes",
                     "lipsync_memory_max_bytes", "lipsync_queue_depth", "lipsync_model_load_failures_total"):
            self.assertIsNotNone(metric(ms, name), name)
        self.assertEqual(metric(ms, "lipsync_models_max"), 4)
        self.assertEqual(metric(ms, "lipsync_model_loaded", model="demo"), 1)
        self.assertIsNotNone(metric(ms, "lipsync_model_evictions_total", model="demo_b1", reason="idle"))

    # ---- gRPC-Web

    def test_list_models_binary_and_text_equal_native(self):
        native = self.stub.ListModels(self.pb2.ListModelsRequest(), timeout=30)
        for text in (False, True):
            r = grpcweb(self.url, "ListModels", b"", text=text)
            self.assertEqual(r.code, 0, r.message)
            self.assertEqual(len(r.messages), 1)
            got = self.pb2.ListModelsResponse.FromString(r.messages[0])
            self.assertEqual([m.model_id for m in got.models], [m.model_id for m in native.models])
            self.assertEqual([m.state for m in got.models], [m.state for m in native.models])
            self.assertEqual(got.models[0].inputs, native.models[0].inputs)

    def test_every_method_reachable(self):
        pb2 = self.pb2
        calls = [("Health", pb2.HealthRequest(), pb2.HealthResponse),
                 ("GetModelStats", pb2.GetModelStatsRequest(model_id="demo"), pb2.GetModelStatsResponse),
                 ("LoadModel", pb2.LoadModelRequest(model_id="demo_b1"), pb2.LoadModelResponse),
                 ("UnloadModel", pb2.UnloadModelRequest(model_id="demo_b1"), pb2.UnloadModelResponse)]
        for method, req, resp_type in calls:
            r = grpcweb(self.url, method, req.SerializeToString())
            self.assertEqual(r.code, 0, "%s: %s" % (method, r.message))
            resp = resp_type.FromString(r.messages[0])
            if method == "Health":
                self.assertEqual(resp.status, "SERVING")
            elif method == "GetModelStats":
                self.assertEqual([m.model_id for m in resp.models], ["demo"])
            else:
                self.assertTrue(resp.success, resp.error)

    def test_infer_png_pixels_equal_native(self):
        v = lstest.make_visual(2, phase=0.5)
        a = lstest.make_audio([0.9, -0.4])
        native = self.infer_bytes("demo", v, a, 2, start=3)
        self.assertTrue(native.success)
        body = infer_request_bytes("demo", 2, 3, v, a)
        for text in (False, True):
            r = grpcweb(self.url, "InferBatchComposite", body, text=text)
            self.assertEqual(r.code, 0, r.message)
            resp = self.pb2.CompositeBatchResponse.FromString(r.messages[0])
            self.assertTrue(resp.success, resp.error)
            self.assertEqual(len(resp.composited_frames), 2)
            for i in range(2):
                # Pixels: PNG bytes may differ between calls (docs/ARCHITECTURE.md, "PNG bytes").
                np.testing.assert_array_equal(lstest.decode_frame(resp.composited_frames[i]),
                                              lstest.decode_frame(native.composited_frames[i]),
                                              "frame %d (text=%s) differs from the native gRPC result" % (i, text))

    def test_request_id_in_trailers(self):
        ids = [grpcweb(self.url, "Health", b"").trailers.get("x-request-id") for _ in range(2)]
        for i in ids:
            self.assertRegex(i or "", r"^[0-9a-f]{6}-w[0-9a-f]{7,}$")
        self.assertNotEqual(ids[0], ids[1])

    def test_text_in_separately_padded_chunks(self):
        # A client may base64 each piece separately: padding in the middle.
        req = self.pb2.GetModelStatsRequest(model_id="demo").SerializeToString()
        f = frame(req)
        body = base64.b64encode(f[:4]) + base64.b64encode(f[4:])
        self.assertIn(b"=", body[:-4])
        r = grpcweb(self.url, "GetModelStats", None, text=True, raw_body=body)
        self.assertEqual(r.code, 0, r.message)

    def test_error_status_and_body(self):
        body = infer_request_bytes("no_such_model", 1, 0, lstest.make_visual(1), lstest.make_audio([0]))
        r = grpcweb(self.url, "InferBatchComposite", body)
        self.assertEqual(r.code, 5, r.message)  # NOT_FOUND, as over gRPC
        self.assertIn("no_such_model", r.message)
        # The body with success=false comes first, as the gRPC transport sends it.
        resp = self.pb2.CompositeBatchResponse.FromString(r.messages[0])
        self.assertFalse(resp.success)
        self.assertEqual(resp.error, r.message)

    def test_message_is_percent_encoded(self):
        # The unknown-method message echoes the (URL-decoded) path.
        r = grpcweb(self.url, "N%25%C3%BCx", b"")
        self.assertEqual(r.code, 12, r.message)
        raw = r.trailers["grpc-message"]
        self.assertTrue(all(0x20 <= ord(c) < 0x7f for c in raw), raw)
        self.assertIn("N%25%C3%BCx", raw)
        self.assertIn("N%\u00fcx", r.message)

    def test_bad_framing_is_invalid_argument(self):
        ok = frame(b"")
        cases = {"short body": b"\x00\x00", "empty body": b"",
                 "length larger than body": b"\x00\x00\x00\x00\x09abc",
                 "trailing bytes": ok + b"\x00",
                 "two frames": ok + ok,
                 "compressed flag": b"\x01" + ok[1:],
                 "trailer flag": b"\x80" + ok[1:]}
        for what, raw in cases.items():
            r = grpcweb(self.url, "ListModels", None, raw_body=raw)
            self.assertEqual(r.code, 3, "%s: %d %s" % (what, r.code, r.message))
            self.assertEqual(r.messages, [], what)
        r = grpcweb(self.url, "ListModels", None, text=True, raw_body=b"AAAA*AAA")
        self.assertEqual(r.code, 3, r.message)
        self.assertIn("base64", r.message)
        r = grpcweb(self.url, "ListModels", None, text=True, raw_body=b"AAA")
        self.assertEqual(r.code, 3, r.message)

    def test_grpc_timeout(self):
        # 1 ns has passed by the time the body is read: not run.
        r = grpcweb(self.url, "ListModels", b"", headers={"grpc-timeout": "1n"})
        self.assertEqual(r.code, 4, r.message)  # DEADLINE_EXCEEDED
        for ok in ("30S", "5M", "1H", "bogus", "123456789S"):  # the last two are malformed: no deadline
            r = grpcweb(self.url, "ListModels", b"", headers={"grpc-timeout": ok})
            self.assertEqual(r.code, 0, "%s: %s" % (ok, r.message))

    def test_malformed_protobuf_is_invalid_argument(self):
        r = grpcweb(self.url, "GetModelStats", b"\xff\xff\xff")
        self.assertEqual(r.code, 3, r.message)

    def test_unknown_method_unimplemented(self):
        r = grpcweb(self.url, "NoSuchMethod", b"")
        self.assertEqual(r.code, 12, r.message)
        status, _, _ = http_request(self.url + "/other.Service/Method", "POST", frame(b""),
                                    {"Content-Type": "application/grpc-web+proto"})
        self.assertEqual(status, 200)

    def test_wrong_content_type_and_method(self):
        status, _, _ = http_request("%s/%s/ListModels" % (self.url, SERVICE), "POST", frame(b""),
                                    {"Content-Type": "application/json"})
        self.assertEqual(status, 415)
        status, headers, _ = http_request("%s/%s/ListModels" % (self.url, SERVICE))
        self.assertEqual(status, 405)
        self.assertIn("POST", headers["Allow"])
        status, _, _ = http_request(self.url + "/metrics", "DELETE")
        self.assertEqual(status, 405)

    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
        try:
            for path in ("/healthz", "/readyz", "/healthz"):
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertNotEqual((r.getheader("Connection") or "").lower(), "close")
            conn.request("POST", "/%s/Health" % SERVICE, frame(b""),
                         {"Content-Type": "application/grpc-web+proto"})
            r = conn.getresponse()
            self.assertEqual(GrpcWebReply(r.status, r.headers, r.read(), False).code, 0)
        finally:
            conn.close()

    # ---- CORS

    def test_cors_preflight_allowed(self):
        status, h, body = http_request("%s/%s/ListModels" % (self.url, SERVICE), "OPTIONS", headers={
            "Origin": "http://allowed.example:8080",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent"})
        self.assertEqual(status, 204)
        self.assertEqual(h["Access-Control-Allow-Origin"], "http://allowed.example:8080")
        allowed = {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")}
        self.assertTrue({"x-grpc-web", "content-type", "x-user-agent", "grpc-timeout", "authorization"} <= allowed,
                        allowed)
        self.assertIn("POST", h["Access-Control-Allow-Methods"])

    def test_cors_preflight_refused(self):
        for origin in ("http://evil.example", None):
            headers = {"Access-Control-Request-Method": "POST"}
            if origin:
                headers["Origin"] = origin
            status, h, _ = http_request("%s/%s/ListModels" % (self.url, SERVICE), "OPTIONS", headers=headers)
            self.assertEqual(status, 403, origin)
            self.assertIsNone(h.get("Access-Control-Allow-Origin"))

    def test_cors_response_headers(self):
        r = grpcweb(self.url, "Health", b"", headers={"Origin": "http://allowed.example:8080"})
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], "http://allowed.example:8080")
        exposed = {x.strip() for x in r.headers["Access-Control-Expose-Headers"].split(",")}
        self.assertTrue({"grpc-status", "grpc-message"} <= exposed)
        r = grpcweb(self.url, "Health", b"", headers={"Origin": "http://evil.example"})
        self.assertIsNone(r.headers.get("Access-Control-Allow-Origin"))

    # ---- static files

    def test_index_page(self):
        status, h, body = http_request(self.url + "/")
        self.assertEqual(status, 200)
        self.assertTrue(h["Content-Type"].startswith("text/html"))
        with open(os.path.join(lstest.SOURCE_DIR, "web", "index.html"), "rb") as f:
            self.assertEqual(body, f.read())
        status, h, _ = http_request(self.url + "/index.html", "HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(int(h["Content-Length"]), len(body))

    def test_path_traversal_refused(self):
        with open(os.path.join(lstest.SOURCE_DIR, "CMakeLists.txt"), "rb") as f:
            secret = f.read()[:40]
        for path in ("/../CMakeLists.txt", "/%2e%2e/CMakeLists.txt", "/..%2fCMakeLists.txt",
                     "/%2e%2e%2fCMakeLists.txt", "/./index.html", "/web/../../CMakeLists.txt",
                     "/..\\CMakeLists.txt", "//etc/passwd", "/.git/config", "/a/../../CMakeLists.txt",
                     "/../../../../../../etc/passwd"):
            status, body = raw_get(self.server.http_port, path)
            self.assertIn(status, (400, 403, 404), path)
            self.assertNotIn(secret, body, path)
            self.assertNotIn(b"root:", body, path)
        status, _ = raw_get(self.server.http_port, "/no_such_file.js")
        self.assertEqual(status, 404)


class TestHttpMetricsCounts(lstest.ServerTestCase):
    """A server of its own, so the counts are exactly the traffic sent here."""
    MODELS = {"demo": demo_model_config("demo", preload=True),
              "demo_lazy": demo_model_config("demo", num_frames=5)}

    def scrape(self):
        status, _, body = http_request(self.server.http_url + "/metrics")
        self.assertEqual(status, 200)
        return parse_metrics(body.decode())

    def test_counts_after_known_traffic(self):
        v, a = lstest.make_visual(1), lstest.make_audio([0.5])
        # 2 native OK, 1 gRPC-Web OK, 1 native INVALID_ARGUMENT (batch 0),
        # 1 gRPC-Web NOT_FOUND (unknown model), 1 OK on demo_lazy (loads it).
        self.infer_bytes("demo", v, a, 1)
        self.infer_bytes("demo", v, a, 1, start=1)
        r = grpcweb(self.server.http_url, "InferBatchComposite", infer_request_bytes("demo", 1, 2, v, a))
        self.assertEqual(r.code, 0, r.message)
        import grpc
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.infer_bytes, "demo", v, a, 0)
        r = grpcweb(self.server.http_url, "InferBatchComposite", infer_request_bytes("ghost", 1, 0, v, a))
        self.assertEqual(r.code, 5)
        self.infer_bytes("demo_lazy", v, a, 1)

        ms = self.scrape()
        self.assertEqual(metric(ms, "lipsync_requests_total", model="demo", code="OK"), 3)
        self.assertEqual(metric(ms, "lipsync_requests_total", model="demo", code="INVALID_ARGUMENT"), 1)
        self.assertEqual(metric(ms, "lipsync_requests_total", model="(unknown)", code="NOT_FOUND"), 1)
        self.assertEqual(metric(ms, "lipsync_requests_total", model="demo_lazy", code="OK"), 1)
        self.assertIsNone(metric(ms, "lipsync_requests_total", model="ghost", code="NOT_FOUND"))
        for h in ("lipsync_inference_duration_seconds", "lipsync_composite_duration_seconds"):
            self.assertEqual(metric(ms, h + "_count", model="demo"), 3, h)
            self.assertEqual(metric(ms, h + "_bucket", model="demo", le="+Inf"), 3, h)
            self.assertGreater(metric(ms, h + "_sum", model="demo"), 0, h)
        # One load each: the preload of demo, the first request of demo_lazy.
        self.assertEqual(metric(ms, "lipsync_model_load_duration_seconds_count", model="demo"), 1)
        self.assertEqual(metric(ms, "lipsync_model_load_duration_seconds_count", model="demo_lazy"), 1)

        stats = self.stub.GetModelStats(self.pb2.GetModelStatsRequest(), timeout=30)
        by_id = {m.model_id: m for m in stats.models}
        self.assertEqual(metric(ms, "lipsync_model_loaded", model="demo"), 1)
        self.assertEqual(metric(ms, "lipsync_model_memory_bytes", model="demo"), by_id["demo"].stats.memory_bytes)
        self.assertEqual(metric(ms, "lipsync_models_loaded"), stats.loaded_models)
        self.assertEqual(metric(ms, "lipsync_models_max"), stats.max_models)
        self.assertEqual(metric(ms, "lipsync_memory_bytes"), stats.total_memory_bytes)
        self.assertEqual(metric(ms, "lipsync_memory_max_bytes"), stats.max_memory_bytes)
        self.assertEqual(metric(ms, "lipsync_model_in_flight", model="demo"), 0)
        self.assertEqual(metric(ms, "lipsync_queue_depth"), 0)
        self.assertEqual(metric(ms, "lipsync_model_load_failures_total"), 0)

        # An explicit unload: loaded 0, memory 0; not an eviction. The heap
        # gauge goes down with it (frames are prepared on first use, so by
        # what the request touched, less than the model's charge).
        # Under a sanitizer its malloc answers mallinfo2 with zeros, and
        # the server leaves the heap gauges out rather than report 0.
        heap_loaded = metric(ms, "lipsync_heap_in_use_bytes")
        if lstest.SLOW:
            self.assertIsNone(heap_loaded)
        else:
            self.assertGreater(heap_loaded, 0)
            self.assertGreaterEqual(metric(ms, "lipsync_heap_free_bytes"), 0)
        self.stub.UnloadModel(self.pb2.UnloadModelRequest(model_id="demo_lazy"), timeout=30)
        ms = self.scrape()
        if not lstest.SLOW:
            self.assertLess(metric(ms, "lipsync_heap_in_use_bytes"), heap_loaded)
        self.assertEqual(metric(ms, "lipsync_model_loaded", model="demo_lazy"), 0)
        self.assertEqual(metric(ms, "lipsync_model_memory_bytes", model="demo_lazy"), 0)
        self.assertEqual(metric(ms, "lipsync_model_evictions_total", model="demo_lazy", reason="evicted"), 0)


class TestHttpEvictionsAndLimits(lstest.ServerTestCase):
    """One model slot (so loads evict), a 1 MiB message limit, a web root of
    its own with a symlink pointing out of it, and idle unloads."""
    MODELS = {"a": demo_model_config("demo", num_frames=2), "b": demo_model_config("demo", num_frames=2)}
    CAPACITY = {"max_models": 1, "idle_unload_minutes": 0.02, "idle_check_seconds": 0.2}
    SERVER_OPTS = {"max_message_mb": 1}

    @classmethod
    def setUpClass(cls):
        cls.web = tempfile.mkdtemp(prefix="webroot-")
        with open(os.path.join(cls.web, "index.html"), "w") as f:
            f.write("<p>test root</p>\n")
        os.symlink(os.path.join(lstest.SOURCE_DIR, "CMakeLists.txt"), os.path.join(cls.web, "escape.txt"))
        cls.HTTP_OPTS = {"web_root": cls.web}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.web, ignore_errors=True)

    def test_symlink_out_of_web_root_refused(self):
        status, body = raw_get(self.server.http_port, "/escape.txt")
        self.assertEqual(status, 403)
        status, body = raw_get(self.server.http_port, "/")
        self.assertEqual((status, body), (200, b"<p>test root</p>\n"))

    def test_message_limit(self):
        big = frame(b"\x0a" + b"\x00" * (1200 * 1024))
        # Content-Length over the limit: refused (the body is read and dropped).
        r = grpcweb(self.server.http_url, "ListModels", None, raw_body=big)
        self.assertEqual(r.code, 8, r.message)
        # Chunked (no Content-Length): refused once the limit is crossed.
        r = grpcweb(self.server.http_url, "ListModels", None, raw_body=iter([big[:500000], big[500000:]]))
        self.assertEqual(r.code, 8, r.message)
        # A frame declaring more than the limit.
        r = grpcweb(self.server.http_url, "ListModels", None, raw_body=b"\x00\x7f\x00\x00\x00")
        self.assertEqual(r.code, 8, r.message)
        r = grpcweb(self.server.http_url, "ListModels", b"")
        self.assertEqual(r.code, 0, r.message)

    def test_evictions_by_reason(self):
        # LoadModel over gRPC-Web: b evicts a.
        pb2 = self.pb2
        for mid in ("a", "b"):
            r = grpcweb(self.server.http_url, "LoadModel", pb2.LoadModelRequest(model_id=mid).SerializeToString())
            self.assertEqual(r.code, 0, r.message)
        _, _, body = http_request(self.server.http_url + "/metrics")
        ms = parse_metrics(body.decode())
        self.assertEqual(metric(ms, "lipsync_model_evictions_total", model="a", reason="evicted"), 1)
        self.assertEqual(metric(ms, "lipsync_model_loaded", model="b"), 1)
        # Then b goes idle (1.2 s) and the sweep (every 0.2 s) unloads it.
        import time
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, _, body = http_request(self.server.http_url + "/metrics")
            ms = parse_metrics(body.decode())
            if metric(ms, "lipsync_model_evictions_total", model="b", reason="idle") == 1:
                break
            time.sleep(0.2)
        self.assertEqual(metric(ms, "lipsync_model_evictions_total", model="b", reason="idle"), 1)
        self.assertEqual(metric(ms, "lipsync_model_loaded", model="b"), 0)
        self.assertEqual(metric(ms, "lipsync_model_evictions_total", model="b", reason="evicted"), 0)


class TestHttpAuth(unittest.TestCase):
    """gRPC-Web carries the authorization header to the same key check."""

    def test_api_key_over_grpcweb(self):
        key = "web-tenant-key-0123456789"
        extra = ("auth:\n  keys:\n    - name: web\n      sha256: \"%s\"\n      models: [demo]\n"
                 % hashlib.sha256(key.encode()).hexdigest())
        server = lstest.LsServer({"demo": demo_model_config("demo")}, extra_yaml=extra).start()
        try:
            r = grpcweb(server.http_url, "ListModels", b"")
            self.assertEqual(r.code, 16, r.message)  # UNAUTHENTICATED
            r = grpcweb(server.http_url, "ListModels", b"", headers={"Authorization": "Bearer " + key})
            self.assertEqual(r.code, 0, r.message)
        finally:
            server.stop()


class TestHttpDrain(unittest.TestCase):
    def test_readyz_503_while_draining(self):
        """After SIGTERM the gRPC calls in flight may finish (drain_seconds);
        meanwhile the HTTP listener still answers, and /readyz says 503."""
        import threading
        import time
        server = lstest.LsServer({"demo": demo_model_config("demo", preload=True)},
                                 server={"drain_seconds": 30}).start()
        pb2, _ = lstest.stubs()
        rpc = server.channel.unary_unary("/%s/InferBatchComposite" % SERVICE, request_serializer=None,
                                         response_deserializer=pb2.CompositeBatchResponse.FromString)
        body = infer_request_bytes("demo", 8, 0, lstest.make_visual(8), lstest.make_audio([0.2] * 8))

        def load():  # native calls back to back until the server refuses them
            try:
                while True:
                    rpc(body, timeout=60)
            except Exception:
                return

        def in_flight():
            _, _, m = http_request(server.http_url + "/metrics")
            return metric(parse_metrics(m.decode()), "lipsync_model_in_flight", model="demo")

        workers = [threading.Thread(target=load) for _ in range(3)]
        try:
            self.assertEqual(http_request(server.http_url + "/readyz")[0], 200)
            for t in workers:
                t.start()
            deadline = time.monotonic() + 60
            while in_flight() < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            server.proc.send_signal(signal.SIGTERM)
            seen = []
            while time.monotonic() < deadline:
                try:
                    seen.append(http_request(server.http_url + "/readyz", timeout=5)[0])
                except OSError:
                    break  # the listener is gone
                if seen[-1] == 503:
                    break
                time.sleep(0.002)
            self.assertIn(503, seen, seen)
            self.assertEqual(server.proc.wait(timeout=60), 0, server.log_tail())
        finally:
            server.stop(check=False)
            for t in workers:
                t.join(60)


class TestHttpDisabledAndOverride(unittest.TestCase):
    def test_disabled(self):
        server = lstest.LsServer({}, http={"enabled": False}).start()
        try:
            with self.assertRaises(OSError):
                http_request(server.http_url + "/healthz", timeout=5)
        finally:
            server.stop()

    def test_http_listen_flag_overrides(self):
        port = lstest.free_port()
        server = lstest.LsServer({}, http={"enabled": False}, args=["--http-listen", "127.0.0.1:%d" % port]).start()
        try:
            status, _, body = http_request("http://127.0.0.1:%d/healthz" % port)
            self.assertEqual((status, body), (200, b"ok\n"))
        finally:
            server.stop()

    def test_port_in_use_fails_start(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            server = lstest.LsServer({}, args=["--http-listen", "127.0.0.1:%d" % port])
            with self.assertRaises(AssertionError) as cm:
                server.start()
            self.assertIn("cannot listen", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
