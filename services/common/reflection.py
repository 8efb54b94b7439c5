"""Server reflection that keeps the proto comments, so `grpcurl describe` shows the documentation.

Generated Python code drops source info; the library servicer serialises what the descriptor
pool holds. This servicer answers from the library as usual, then swaps our own files for the
copies in ``descriptors.binpb`` (written by scripts/gen_proto.py with --include_source_info).
"""

from __future__ import annotations

from importlib import resources

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


def _documented_files() -> dict[str, bytes]:
    raw = resources.files("cryptolens.v1").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    return {f.name: f.SerializeToString() for f in files}


class DocumentedReflection(ReflectionServicer):
    def __init__(self, service_names):
        super().__init__(service_names)
        self._documented = _documented_files()

    def _with_comments(self, response):
        if response.HasField("file_descriptor_response"):
            protos = response.file_descriptor_response.file_descriptor_proto
            for i, raw in enumerate(protos):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                if name in self._documented:
                    protos[i] = self._documented[name]
        return response

    def _file_by_filename(self, *args):
        return self._with_comments(super()._file_by_filename(*args))

    def _file_containing_symbol(self, *args):
        return self._with_comments(super()._file_containing_symbol(*args))

    def _file_containing_extension(self, *args):
        return self._with_comments(super()._file_containing_extension(*args))


def enable(server, service_names) -> None:
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(DocumentedReflection(names), server)
