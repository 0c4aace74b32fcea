"""A Python client of calc-dbagent's gRPC service, for the system tests.

proto/calc.proto is compiled with protoc into a temporary folder at first import (Debian's
protobuf-compiler, python3-protobuf, python3-grpcio), so the tests always use the current proto.

    c = DbaClient("127.0.0.1:50051", token)
    user = c.CreateUser(login="ann", password_hash="h").user
    with pytest.raises(RpcError) as e: c.FindUser(login="nobody")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
"""

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

from harness import SOURCE_DIR

_gen = tempfile.mkdtemp(prefix="calc-pb2-")
atexit.register(shutil.rmtree, _gen, ignore_errors=True)
subprocess.run(
    ["protoc", f"--proto_path={os.path.join(SOURCE_DIR, 'proto')}", f"--python_out={_gen}", "calc.proto"],
    check=True,
)
sys.path.insert(0, _gen)
pb = importlib.import_module("calc_pb2")
sys.path.remove(_gen)

# method name -> (request message, reply message); the service descriptor is the source of truth.
_SERVICE = pb.DESCRIPTOR.services_by_name["DbAgent"]
METHODS = {
    m.name: (getattr(pb, m.input_type.name), getattr(pb, m.output_type.name)) for m in _SERVICE.methods
}


class RpcError(AssertionError):
    def __init__(self, method, code, details):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class DbaClient:
    """One channel; every DbAgent method is an attribute: c.ClaimNode(node_id=1, epoch=1, agent="a")."""

    def __init__(self, target, token, timeout=10.0, ca=None, cert=None, key=None, server_name=None):
        """Plaintext, or TLS when ca (a PEM file) is given; cert and key: a client certificate."""
        self.target = target
        self.token = token
        self.timeout = timeout
        if ca is None:
            self.channel = grpc.insecure_channel(target)
        else:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()

            creds = grpc.ssl_channel_credentials(read(ca), read(key) if key else None, read(cert) if cert else None)
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.secure_channel(target, creds, options=options)
        self._stubs = {}

    def close(self):
        self.channel.close()

    def call(self, method, request=None, timeout=None, token=None, **fields):
        req_type, rep_type = METHODS[method]
        if request is None:
            request = req_type(**fields)
        stub = self._stubs.get(method)
        if stub is None:
            stub = self._stubs[method] = self.channel.unary_unary(
                f"/calc.v1.DbAgent/{method}",
                request_serializer=req_type.SerializeToString,
                response_deserializer=rep_type.FromString,
            )
        token = self.token if token is None else token
        metadata = [("x-calc-token", token)] if token else []
        try:
            return stub(request, timeout=self.timeout if timeout is None else timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise RpcError(method, e.code(), e.details()) from None

    def code_of(self, method, **fields):
        """The status code of a call (OK when it succeeds)."""
        try:
            self.call(method, **fields)
            return grpc.StatusCode.OK
        except RpcError as e:
            return e.code

    def __getattr__(self, name):
        if name in METHODS:
            return lambda request=None, **fields: self.call(name, request, **fields)
        raise AttributeError(name)


# ---- plans -------------------------------------------------------------------------------------


def leaf(op, a, b, parent=-1, tail_ms=0, delay_ms=0):
    return pb.PlanNode(
        op=op, left=pb.Operand(value=a), right=pb.Operand(value=b), parent=parent, tail_ms=tail_ms, delay_ms=delay_ms
    )


def inner(op, left, right, parent=-1, tail_ms=0, delay_ms=0):
    """left/right: an index of a child node (int) or a literal (float)."""

    def operand(x):
        return pb.Operand(node=x) if isinstance(x, int) else pb.Operand(value=x)

    return pb.PlanNode(op=op, left=operand(left), right=operand(right), parent=parent, tail_ms=tail_ms, delay_ms=delay_ms)


def plan_2_plus_2_times_2():
    """2 + 2*2: node 0 = 2*2 (ready), node 1 = 2 + node0 (the root)."""
    return [leaf("*", 2, 2, parent=1, tail_ms=2), inner("+", 2.0, 0, tail_ms=1)]


def plan_wide(n, op="+"):
    """n independent leaves (i + 1 each) joined left-deep: leaves 0..n-1, then joins."""
    nodes = [leaf(op, float(i), 1.0, tail_ms=10 + i) for i in range(n)]
    prev = 0
    for i in range(1, n):
        nodes.append(inner(op, prev, i, tail_ms=1))
        idx = len(nodes) - 1
        nodes[prev].parent = idx
        nodes[i].parent = idx
        prev = idx
    nodes[-1].parent = -1
    return nodes
