"""What both stand-in plugins share: plain values in and out of the provider protocol, and the gRPC server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.provider.experimental import provider
from pulumi.provider.experimental.property_value import Computed, PropertyValue
from pulumi.provider.experimental.server import _GRPC_CHANNEL_OPTIONS, ProviderServicer
from pulumi.runtime.proto import provider_pb2 as proto
from pulumi.runtime.proto import provider_pb2_grpc
from pulumi.runtime.rpc import UNKNOWN

# The SDK's experimental PropertyValue cannot marshal an unknown (Computed) value, which every preview has; on the
# wire an unknown is the UNKNOWN sentinel string, as the rest of the SDK writes it.
_marshal_known = PropertyValue.marshal


def _marshal(self: PropertyValue) -> struct_pb2.Value:
    if isinstance(self.value, Computed):
        return struct_pb2.Value(string_value=UNKNOWN)
    return _marshal_known(self)


PropertyValue.marshal = _marshal  # type: ignore[method-assign]


class StepFailed(Exception):
    """A failure the user must read: sent to the engine as the message alone, without a provider traceback."""


def own_type(urn_type: str) -> str:
    """A resource's own type token; a URN's type part starts with its parents' types, joined by `$`."""
    return urn_type.rsplit("$", 1)[-1]


def plain(value: PropertyValue) -> Any:
    """The Python value of a property, secrets unwrapped (the provider needs the key to dial)."""
    inner = value.value
    if isinstance(inner, Mapping):
        return {key: plain(item) for key, item in inner.items()}
    if isinstance(inner, (list, tuple)):
        return [plain(item) for item in inner]
    if isinstance(inner, float) and inner.is_integer():
        return int(inner)
    return inner


def plain_map(properties: Mapping[str, PropertyValue]) -> dict[str, Any]:
    return {key: plain(value) for key, value in properties.items()}


def is_unknown(value: Any) -> bool:
    if isinstance(value, Computed):
        return True
    if isinstance(value, Mapping):
        return any(is_unknown(item) for item in value.values())
    if isinstance(value, list):
        return any(is_unknown(item) for item in value)
    return False


def wrap(value: Any, secret: bool = False) -> PropertyValue:
    """A PropertyValue from a plain value (ints travel as floats on the wire)."""
    if isinstance(value, PropertyValue):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (str, float, Computed)):
        return PropertyValue(value, is_secret=secret)
    if isinstance(value, int):
        return PropertyValue(float(value), is_secret=secret)
    if isinstance(value, Mapping):
        return PropertyValue({key: wrap(item) for key, item in value.items()}, is_secret=secret)
    return PropertyValue([wrap(item) for item in value], is_secret=secret)


class _Servicer(ProviderServicer):
    """The SDK's servicer, but a StepFailed reaches the engine as its message alone (no Python traceback)."""

    async def Create(self, request, context):  # noqa: N802 - gRPC method name
        try:
            resp = await self._provider.create(
                provider.CreateRequest(
                    request.urn, PropertyValue.unmarshal_map(request.properties), request.timeout, request.preview
                )
            )
        except StepFailed as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return proto.CreateResponse(id=resp.resource_id, properties=PropertyValue.marshal_map(resp.properties))

    async def Update(self, request, context):  # noqa: N802
        try:
            resp = await self._provider.update(
                provider.UpdateRequest(
                    request.urn,
                    request.id,
                    PropertyValue.unmarshal_map(request.olds),
                    PropertyValue.unmarshal_map(request.news),
                    timeout=request.timeout,
                    ignore_changes=list(request.ignoreChanges),
                    preview=request.preview,
                )
            )
        except StepFailed as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return proto.UpdateResponse(properties=PropertyValue.marshal_map(resp.properties))

    async def Delete(self, request, context):  # noqa: N802
        try:
            await self._provider.delete(
                provider.DeleteRequest(
                    request.urn, request.id, PropertyValue.unmarshal_map(request.properties), timeout=request.timeout
                )
            )
        except StepFailed as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return empty_pb2.Empty()


def serve(version: str, implementation: provider.Provider) -> None:
    """Run the plugin: the engine's address is the first argument; the chosen port goes to stdout."""
    engine = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")

    async def run() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        servicer = _Servicer(sys.argv[1:], version, implementation, engine_address=engine)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(servicer, server)
        port = server.add_insecure_port(address="127.0.0.1:0")
        await server.start()
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        await server.wait_for_termination()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
