#!/usr/bin/env python3
"""Proves a client generated in another language works against a running server.

Generates Python stubs from proto/ exactly as the README tells client authors
to (``python -m grpc_tools.protoc -Iproto --python_out=DIR --grpc_python_out=DIR
proto/conversations/v1/*.proto``) into a temporary directory, then with grpcio:

* asks reflection **v1** for the services (grpcurl 1.8.6 only speaks v1alpha);
* starts a conversation with the agent key and gets it back: OPEN;
* closes it and sends a visitor message with the visitor key: refused with
  FAILED_PRECONDITION whose google.rpc.ErrorInfo reason is CONVERSATION_CLOSED
  (read from the ``grpc-status-details-bin`` trailer, as any client can).

Run by scripts/smoke.sh; needs ``pip install grpcio grpcio-tools``.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import subprocess
import sys
import tempfile


def generate_stubs(proto_dir: str, out_dir: str) -> None:
    """Runs the README's protoc command (grpc_tools ships the well-known types)."""
    protos = sorted(glob.glob(os.path.join(proto_dir, "conversations", "v1", "*.proto")))
    if not protos:
        sys.exit(f"python: no .proto files under {proto_dir}/conversations/v1")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    subprocess.run(cmd, check=True)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """Yields (field number, value) of a protobuf message; bytes for LEN fields."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def error_info_reasons(status_details: bytes) -> list[tuple[str, str]]:
    """(domain, reason) of each google.rpc.ErrorInfo in a serialized google.rpc.Status."""
    found = []
    for number, any_msg in _fields(status_details):
        if number != 3:  # Status.details
            continue
        any_fields = dict(_fields(any_msg))
        if any_fields.get(1, b"").decode() != "type.googleapis.com/google.rpc.ErrorInfo":
            continue
        info = {n: v for n, v in _fields(any_fields.get(2, b"")) if n in (1, 2)}
        found.append((info.get(2, b"").decode(), info.get(1, b"").decode()))
    return found


def reflection_v1_services(channel) -> list[str]:
    """Service names listed by grpc.reflection.v1 (grpcurl 1.8.6 only asks v1alpha).

    Sends ServerReflectionRequest{list_services: "*"} as raw bytes, so no
    reflection stubs are needed.
    """
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    names = []
    for response in call(iter([b"\x3a\x01*"]), timeout=10):
        for number, listing in _fields(response):
            if number == 6:  # list_services_response
                for n, service in _fields(listing):
                    if n == 1:
                        names.append(dict(_fields(service)).get(1, b"").decode())
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of a running server")
    parser.add_argument("--agent-key", required=True)
    parser.add_argument("--visitor-key", required=True)
    parser.add_argument(
        "--proto-dir",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"),
    )
    args = parser.parse_args()

    import grpc  # noqa: PLC0415 - only needed once the arguments are fine

    with tempfile.TemporaryDirectory(prefix="conversations-pyclient-") as out_dir:
        generate_stubs(args.proto_dir, out_dir)
        sys.path.insert(0, out_dir)
        pb = importlib.import_module("conversations.v1.conversation_pb2")
        svc_pb = importlib.import_module("conversations.v1.conversation_service_pb2")
        svc_grpc = importlib.import_module("conversations.v1.conversation_service_pb2_grpc")
        print("    python: generated stubs with grpc_tools.protoc")

        agent_md = [("authorization", f"Bearer {args.agent_key}")]
        visitor_md = [("authorization", f"Bearer {args.visitor_key}")]
        agent = pb.AgentRef(agent_id="pat", display_name="Pat", channel=pb.CHANNEL_INBOX)

        with grpc.insecure_channel(args.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = svc_grpc.ConversationServiceStub(channel)

            services = reflection_v1_services(channel)
            assert "conversations.v1.ConversationService" in services, services
            print("    python: reflection v1 lists conversations.v1.ConversationService")

            started = stub.StartConversation(
                svc_pb.StartConversationRequest(visitor_id="v-python", agent=agent),
                metadata=agent_md, timeout=10,
            ).conversation
            got = stub.GetConversation(
                svc_pb.GetConversationRequest(conversation_id=started.conversation_id),
                metadata=agent_md, timeout=10,
            ).conversation
            assert got.conversation_id == started.conversation_id, (got, started)
            assert got.status == pb.CONVERSATION_STATUS_OPEN, got
            assert got.visitor_id == "v-python", got
            assert got.assignee.agent_id == "pat", got
            print(f"    python: StartConversation + GetConversation -> {got.conversation_id} OPEN")

            closed = stub.CloseConversation(
                svc_pb.CloseConversationRequest(conversation_id=got.conversation_id, agent=agent),
                metadata=agent_md, timeout=10,
            ).conversation
            assert closed.status == pb.CONVERSATION_STATUS_CLOSED, closed
            try:
                stub.SendMessage(
                    svc_pb.SendMessageRequest(
                        conversation_id=got.conversation_id, visitor_id="v-python", text="hi?"
                    ),
                    metadata=visitor_md, timeout=10,
                )
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.code(), err.details())
                details = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
                assert details, "no grpc-status-details-bin trailer"
                reasons = error_info_reasons(details)
                assert ("conversations", "CONVERSATION_CLOSED") in reasons, reasons
                print("    python: SendMessage on CLOSED -> FAILED_PRECONDITION, "
                      "ErrorInfo{domain: conversations, reason: CONVERSATION_CLOSED}")
            else:
                raise AssertionError("SendMessage on a CLOSED conversation succeeded")


if __name__ == "__main__":
    main()
