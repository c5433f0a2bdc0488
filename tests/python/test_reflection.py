"""gRPC server reflection (grpc.reflection.v1alpha and v1).

The client here knows nothing of multitenant.proto: it lists the services,
fetches the file that declares multitenant.MultiTenantLipSync, builds message
classes from that FileDescriptorProto in a descriptor pool of its own and
calls ListModels with them, as grpcurl or Postman would. Only the reflection
messages themselves are generated (from Debian's grpc-proto, at test time).
"""

import queue
import unittest

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import lstest
from lstest import demo_model_config

NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
SERVICES = {"multitenant.MultiTenantLipSync", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}


def reflection_pb2(version):
    return lstest.grpc_proto_pb2("grpc/reflection/%s/reflection.proto" % version)


def message_class(pool, full_name):
    desc = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


class ReflectionStream:
    """One ServerReflectionInfo call: ask() sends a request on the open
    stream and returns the response to it."""

    def __init__(self, channel, version="v1alpha"):
        self.pb = reflection_pb2(version)
        rpc = channel.stream_stream(
            "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
            request_serializer=self.pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=self.pb.ServerReflectionResponse.FromString)
        self.requests = queue.Queue()
        self.responses = rpc(iter(self.requests.get, None), timeout=lstest.RPC_TIMEOUT_S)

    def ask(self, **fields):
        self.requests.put(self.pb.ServerReflectionRequest(**fields))
        return next(self.responses)

    def close(self):
        self.requests.put(None)
        rest = list(self.responses)  # the server ends the call with OK after the half-close
        if rest:
            raise AssertionError("unexpected responses after the last request: %r" % rest)


class TestReflection(lstest.ServerTestCase):
    MODELS = {"demo": demo_model_config("demo", num_frames=5, preload=True),
              "other": demo_model_config("demo", num_frames=5)}

    def setUp(self):
        self.stream = ReflectionStream(self.server.channel)

    def tearDown(self):
        if self.stream is not None:
            self.stream.close()

    def files_for(self, resp):
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", resp)
        out = []
        for blob in resp.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(blob)
            out.append(fd)
        return out

    def assertErrorResponse(self, resp, code):
        self.assertEqual(resp.WhichOneof("message_response"), "error_response", resp)
        self.assertEqual(resp.error_response.error_code, code, resp)
        return resp.error_response.error_message

    def test_list_services(self):
        resp = self.stream.ask(list_services="*")
        self.assertEqual({s.name for s in resp.list_services_response.service}, SERVICES)
        self.assertEqual(resp.original_request.list_services, "*")

    def test_client_built_from_reflection_calls_list_models(self):
        services = [s.name for s in self.stream.ask(list_services="").list_services_response.service]
        self.assertIn("multitenant.MultiTenantLipSync", services)
        files = self.files_for(self.stream.ask(file_containing_symbol="multitenant.MultiTenantLipSync"))
        self.assertEqual(files[0].name, "multitenant.proto")
        pool = descriptor_pool.DescriptorPool()  # not the default pool: nothing pre-generated in it
        for fd in reversed(files):  # dependencies first
            pool.Add(fd)
        service = pool.FindServiceByName("multitenant.MultiTenantLipSync")
        self.assertEqual({m.name for m in service.methods},
                         {"InferBatchComposite", "ListModels", "GetModelStats", "LoadModel",
                          "UnloadModel", "Health", "ExtractAudioFeatures", "RenderSpeech", "StreamSession"})
        method = service.methods_by_name["ListModels"]
        request_cls = message_class(pool, method.input_type.full_name)
        response_cls = message_class(pool, method.output_type.full_name)
        call = self.server.channel.unary_unary(
            "/%s/%s" % (service.full_name, method.name),
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString)
        resp = call(request_cls(), timeout=lstest.RPC_TIMEOUT_S)
        states = {m.model_id: m.state for m in resp.models}
        self.assertEqual(states, {"demo": "loaded", "other": "unloaded"})
        # And a method with a request field: GetModelStats(model_id).
        method = service.methods_by_name["GetModelStats"]
        request_cls = message_class(pool, method.input_type.full_name)
        response_cls = message_class(pool, method.output_type.full_name)
        call = self.server.channel.unary_unary(
            "/%s/%s" % (service.full_name, method.name),
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString)
        resp = call(request_cls(model_id="demo"), timeout=lstest.RPC_TIMEOUT_S)
        self.assertEqual([m.model_id for m in resp.models], ["demo"])

    def test_symbols_of_every_kind(self):
        cases = {
            "multitenant.MultiTenantLipSync.ListModels": "multitenant.proto",     # method
            "multitenant.ModelInfo": "multitenant.proto",                         # message
            ".multitenant.ModelInfo": "multitenant.proto",                        # leading dot
            "multitenant.CompositeBatchRequest.model_id": "multitenant.proto",    # field
            "grpc.health.v1.Health": "grpc/health/v1/health.proto",               # service
            "grpc.health.v1.HealthCheckResponse.ServingStatus": "grpc/health/v1/health.proto",  # nested enum
            "grpc.health.v1.HealthCheckResponse.SERVING": "grpc/health/v1/health.proto",  # enum value
            "grpc.reflection.v1.ServerReflection": "grpc/reflection/v1/reflection.proto",
        }
        for symbol, filename in cases.items():
            with self.subTest(symbol=symbol):
                files = self.files_for(self.stream.ask(file_containing_symbol=symbol))
                self.assertEqual(files[0].name, filename)

    def test_file_by_filename(self):
        for name, package in (("multitenant.proto", "multitenant"),
                              ("grpc/health/v1/health.proto", "grpc.health.v1"),
                              ("grpc/reflection/v1alpha/reflection.proto", "grpc.reflection.v1alpha")):
            with self.subTest(name=name):
                files = self.files_for(self.stream.ask(file_by_filename=name))
                self.assertEqual((files[0].name, files[0].package), (name, package))
                # Everything it imports comes with it (these import nothing).
                self.assertEqual(len(files), 1 + len(files[0].dependency))

    def test_health_descriptor_matches_the_proto(self):
        files = self.files_for(self.stream.ask(file_containing_symbol="grpc.health.v1.Health"))
        health = files[0]
        self.assertEqual([m.name for m in health.message_type], ["HealthCheckRequest", "HealthCheckResponse"])
        svc = health.service[0]
        watch = [m for m in svc.method if m.name == "Watch"][0]
        self.assertTrue(watch.server_streaming)
        self.assertFalse(watch.client_streaming)

    def test_unknown_symbol_and_file(self):
        msg = self.assertErrorResponse(self.stream.ask(file_containing_symbol="multitenant.Nope"), NOT_FOUND)
        self.assertIn("multitenant.Nope", msg)
        self.assertErrorResponse(self.stream.ask(file_containing_symbol=""), NOT_FOUND)
        self.assertErrorResponse(self.stream.ask(file_by_filename="nope.proto"), NOT_FOUND)
        self.assertErrorResponse(self.stream.ask(file_containing_extension={
            "containing_type": "multitenant.ModelInfo", "extension_number": 100}), NOT_FOUND)
        # The stream goes on after errors.
        self.assertEqual(self.stream.ask(list_services="").WhichOneof("message_response"),
                         "list_services_response")

    def test_extension_numbers(self):
        resp = self.stream.ask(all_extension_numbers_of_type="multitenant.ModelInfo")
        self.assertEqual(resp.all_extension_numbers_response.base_type_name, "multitenant.ModelInfo")
        self.assertEqual(list(resp.all_extension_numbers_response.extension_number), [])
        self.assertErrorResponse(self.stream.ask(all_extension_numbers_of_type="multitenant.Nope"), NOT_FOUND)
        # A service is not a message type.
        self.assertErrorResponse(
            self.stream.ask(all_extension_numbers_of_type="multitenant.MultiTenantLipSync"), NOT_FOUND)

    def test_request_without_a_kind(self):
        self.assertErrorResponse(self.stream.ask(host="h"), UNIMPLEMENTED)

    def test_host_and_original_request_echoed(self):
        resp = self.stream.ask(host="lipsync.example", file_by_filename="multitenant.proto")
        self.assertEqual(resp.valid_host, "lipsync.example")
        self.assertEqual(resp.original_request.file_by_filename, "multitenant.proto")

    def test_many_requests_on_one_stream_in_order(self):
        names = ["multitenant.proto", "grpc/health/v1/health.proto"] * 10
        for name in names:
            self.assertEqual(self.files_for(self.stream.ask(file_by_filename=name))[0].name, name)

    def test_v1_path(self):
        v1 = ReflectionStream(self.server.channel, "v1")
        try:
            resp = v1.ask(list_services="")
            self.assertEqual({s.name for s in resp.list_services_response.service}, SERVICES)
            files = self.files_for(v1.ask(file_containing_symbol="multitenant.MultiTenantLipSync"))
            self.assertEqual(files[0].name, "multitenant.proto")
        finally:
            v1.close()

    def test_malformed_request_ends_the_stream(self):
        self.stream.close()
        self.stream = None
        raw = self.server.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with self.assertRaises(grpc.RpcError) as cm:
            list(raw(iter([b"\xff\xff\xff"]), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_cancelled_stream(self):
        """A client that goes away in the middle of a stream leaves the server
        healthy."""
        s = ReflectionStream(self.server.channel)
        s.ask(list_services="")
        s.responses.cancel()
        s.requests.put(None)
        self.assertEqual(self.stream.ask(list_services="").WhichOneof("message_response"),
                         "list_services_response")


if __name__ == "__main__":
    unittest.main()
