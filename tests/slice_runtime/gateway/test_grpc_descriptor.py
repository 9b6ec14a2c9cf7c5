"""The gRPC descriptor the gateway loads is its .proto compiled by protoc (`make proto`), and
speaks the wire format V2 clients use: every method, message and field as tritonclient has them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

from slice_runtime.gateway import messages
from slice_runtime.gateway.predict_v2_descriptor import SERIALIZED


def test_the_shipped_descriptor_is_the_proto_compiled(tmp_path) -> None:
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.fail("protoc is missing: `make system-deps` installs Debian's protobuf-compiler")
    out = tmp_path / "set.binpb"
    proto = messages.PROTO
    subprocess.run([protoc, f"-I{proto.parent}", f"--descriptor_set_out={out}", str(proto)], check=True)
    [compiled] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert (proto.parent / "predict_v2_descriptor.py").read_text() == messages.descriptor_module(
        compiled.SerializeToString()
    ), "predict_v2_descriptor.py is stale: run `make proto`"


def _fields(message: descriptor_pb2.DescriptorProto) -> dict[str, tuple[int, int, int, str]]:
    return {f.name: (f.number, f.type, f.label, f.type_name) for f in message.field}


def _messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    found = {}

    def walk(prefix: str, items: list[descriptor_pb2.DescriptorProto]) -> None:
        for item in items:
            found[prefix + item.name] = item
            walk(f"{prefix}{item.name}.", list(item.nested_type))

    walk("", list(file.message_type))
    return found


def test_every_method_message_and_field_is_the_one_tritonclient_sends() -> None:
    ours = descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED)
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"
    [service] = ours.service
    [triton_service] = [s for s in theirs.service if s.name == service.name == "GRPCInferenceService"]
    triton_methods = {m.name: (m.input_type, m.output_type) for m in triton_service.method}
    for method in service.method:
        assert triton_methods[method.name] == (method.input_type, method.output_type)
    assert {m.name for m in service.method} == set(messages.METHODS)
    triton_messages = _messages(theirs)
    for name, message in _messages(ours).items():
        theirs_fields = _fields(triton_messages[name])
        for field, spec in _fields(message).items():
            assert theirs_fields[field] == spec, f"{name}.{field}"
