"""The committed stubs are exactly what the .proto generates, and the API's shape is the one
the docs promise (so a change to the contract is always a visible, deliberate diff)."""

from __future__ import annotations

from services.proto import generate
from services.proto.hwcompress.v1 import service_pb2 as pb


def test_committed_stubs_match_the_proto():
    assert generate.main(["--check"]) == 0, "run: python -m services.proto.generate"


def test_service_shape():
    svc = pb.DESCRIPTOR.services_by_name["CompressionService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in svc.methods}
    assert methods == {
        "SubmitJob": (False, False), "GetJob": (False, False), "ListJobs": (False, False),
        "CancelJob": (False, False), "WatchJob": (False, True), "GetResult": (False, True),
        "UploadModel": (True, False), "ListHardwareProfiles": (False, False),
        "GetServerInfo": (False, False)}
    assert svc.full_name == "hwcompress.v1.CompressionService"
    assert pb.DESCRIPTOR.name == "hwcompress/v1/service.proto"
