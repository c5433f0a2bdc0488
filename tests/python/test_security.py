"""Tenant API keys and TLS, through the real gRPC client.

Keys: a tenant key sees and uses only its models; an admin key sees all and
may Load/Unload; no key is UNAUTHENTICATED; another tenant's model is
PERMISSION_DENIED with the same message whether or not the model exists.
TLS: a self-signed certificate made at test time with the openssl command;
plaintext clients cannot talk to it; with a client CA configured, a client
without a certificate is refused and one with a signed certificate works."""

import hashlib
import os
import subprocess
import tempfile
import unittest

import grpc

import lstest
from lstest import demo_model_config

TENANT_A = "tenant-a-key-0123456789"
TENANT_B = "tenant-b-key-9876543210"
ADMIN = "admin-key-abcdefghijklmnop"


def bearer(key):
    return (("authorization", "Bearer " + key),)


class TestApiKeys(lstest.ServerTestCase):
    MODELS = {
        "alice_1": demo_model_config("demo", num_frames=5),
        "alice_2": demo_model_config("demo", num_frames=5),
        "bob": demo_model_config("demo", num_frames=5),
    }

    @classmethod
    def setUpClass(cls):
        keyfile = os.path.join(tempfile.mkdtemp(), "admin.key")
        with open(keyfile, "w") as f:
            f.write(ADMIN + "\n")
        os.environ["LS_TEST_TENANT_B_KEY"] = TENANT_B
        extra = (
            "auth:\n"
            "  keys:\n"
            "    - name: alice\n"
            "      sha256: \"%s\"\n"
            "      models: [\"alice_*\"]\n"
            "    - name: bob\n"
            "      key_env: LS_TEST_TENANT_B_KEY\n"
            "      models: [bob]\n"
            "    - name: ops\n"
            "      key_file: \"%s\"\n"
            "      admin: true\n" % (hashlib.sha256(TENANT_A.encode()).hexdigest(), keyfile))
        cls.server = lstest.LsServer(cls.MODELS, extra_yaml=extra).start()
        cls.pb2, _ = lstest.stubs()
        cls.stub = cls.server.stub

    def call(self, method, req, key=None):
        md = bearer(key) if key else None
        return getattr(self.stub, method)(req, timeout=30, metadata=md)

    def infer_with(self, model, key):
        req = self.pb2.CompositeBatchRequest(model_id=model, batch_size=1, start_frame_idx=0)
        req.visual_frames.extend([0.5] * lstest.VISUAL_PER_FRAME)
        req.audio_features.extend([0.1] * lstest.AUDIO_PER_FRAME)
        return self.call("InferBatchComposite", req, key)

    def assertCode(self, code, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def test_no_key_is_unauthenticated(self):
        self.assertCode(grpc.StatusCode.UNAUTHENTICATED, self.infer_with, "alice_1", None)
        self.assertCode(grpc.StatusCode.UNAUTHENTICATED, self.call, "ListModels", self.pb2.ListModelsRequest())

    def test_unknown_key_is_unauthenticated(self):
        d = self.assertCode(grpc.StatusCode.UNAUTHENTICATED, self.infer_with, "alice_1", "wrong-key-000000000")
        self.assertIn("unknown API key", d)

    def test_own_model_served(self):
        resp = self.infer_with("alice_2", TENANT_A)
        self.assertTrue(resp.success)
        resp = self.infer_with("bob", TENANT_B)
        self.assertTrue(resp.success)

    def test_other_tenants_model_denied_without_revealing_existence(self):
        d_exists = self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.infer_with, "bob", TENANT_A)
        d_absent = self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.infer_with, "bobby", TENANT_A)
        self.assertEqual(d_exists.replace("bob", "X"), d_absent.replace("bobby", "X"))
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.call, "GetModelStats",
                        self.pb2.GetModelStatsRequest(model_id="alice_1"), TENANT_B)

    def test_listing_shows_only_own_models(self):
        ids = sorted(m.model_id for m in self.call("ListModels", self.pb2.ListModelsRequest(), TENANT_A).models)
        self.assertEqual(ids, ["alice_1", "alice_2"])
        ids = sorted(m.model_id for m in
                     self.call("GetModelStats", self.pb2.GetModelStatsRequest(), TENANT_B).models)
        self.assertEqual(ids, ["bob"])
        ids = sorted(m.model_id for m in self.call("ListModels", self.pb2.ListModelsRequest(), ADMIN).models)
        self.assertEqual(ids, ["alice_1", "alice_2", "bob"])

    def test_only_admin_loads_and_unloads(self):
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.call, "LoadModel",
                        self.pb2.LoadModelRequest(model_id="alice_1"), TENANT_A)
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.call, "UnloadModel",
                        self.pb2.UnloadModelRequest(model_id="alice_1"), TENANT_A)
        self.assertTrue(self.call("LoadModel", self.pb2.LoadModelRequest(model_id="alice_1"), ADMIN).success)
        r = self.call("UnloadModel", self.pb2.UnloadModelRequest(model_id="alice_1"), ADMIN)
        self.assertEqual(r.state, "unloaded")


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_pki(d):
    """A CA, a server certificate for localhost, and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lipsync-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)

    def read(n):
        with open(os.path.join(d, n), "rb") as f:
            return f.read()
    return {n: read(n) for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class TestTls(unittest.TestCase):
    MUTUAL = False

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.pki = make_pki(cls.dir)
        extra = "tls:\n  cert_file: \"%s\"\n  key_file: \"%s\"\n" % (
            os.path.join(cls.dir, "server.crt"), os.path.join(cls.dir, "server.key"))
        if cls.MUTUAL:
            extra += "  client_ca_file: \"%s\"\n" % os.path.join(cls.dir, "ca.crt")
            creds = grpc.ssl_channel_credentials(cls.pki["ca.crt"], cls.pki["client.key"], cls.pki["client.crt"])
        else:
            creds = grpc.ssl_channel_credentials(cls.pki["ca.crt"])
        cls.server = lstest.LsServer({"demo": demo_model_config("demo", num_frames=5)},
                                     extra_yaml=extra, credentials=creds).start()
        cls.pb2, cls.pb2_grpc = lstest.stubs()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(check=True)

    def stub_for(self, creds):
        opts = [("grpc.ssl_target_name_override", "localhost")]
        ch = grpc.secure_channel(self.server.addr, creds, options=opts) if creds else \
            grpc.insecure_channel(self.server.addr)
        self.addCleanup(ch.close)
        return self.pb2_grpc.MultiTenantLipSyncStub(ch)

    def test_tls_client_works(self):
        models = self.server.stub.ListModels(self.pb2.ListModelsRequest(), timeout=10).models
        self.assertEqual([m.model_id for m in models], ["demo"])

    def test_plaintext_client_refused(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub_for(None).Health(self.pb2.HealthRequest(), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)


class TestMutualTls(TestTls):
    MUTUAL = True

    def test_client_without_certificate_refused(self):
        stub = self.stub_for(grpc.ssl_channel_credentials(self.pki["ca.crt"]))
        with self.assertRaises(grpc.RpcError) as cm:
            stub.Health(self.pb2.HealthRequest(), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
