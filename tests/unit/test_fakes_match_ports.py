"""The fakes (and the real adapters of each port) take the ports' parameters: a fake cannot drift from its port."""

from __future__ import annotations

import inspect

import pytest

from gateway.documents import DocumentRows, HopWriter
from gateway.pipeline.accept import Dispatcher
from gateway.pipeline.exchange import ResponseVerifier, SendPort
from gateway.pipeline.ports import AcceptStore, DeliveryStore, Signer, WriteQueue
from gateway.pipeline.transport import HttpxTransport
from gateway.pipeline.verify import CounterpartVerifier
from gateway.storage.batch import Committer
from gateway.storage.documents import DocumentStore
from gateway.storage.store import Store
from tests import fakes

PORTS = [
    (AcceptStore, [fakes.FakeStore, Store]),
    (DeliveryStore, [fakes.FakeStore, Store]),
    (HopWriter, [fakes.FakeHopWriter, fakes.FakeStore, Store]),
    (DocumentRows, [fakes.FakeDocumentRows, DocumentStore]),
    (WriteQueue, [fakes.FakeCommitter, Committer]),
    (Signer, [fakes.FakeSigner]),
    (SendPort, [fakes.FakeTransport, HttpxTransport]),
    (ResponseVerifier, [fakes.FakeVerifier, CounterpartVerifier]),
    (Dispatcher, [fakes.FakeDispatcher]),
]


def members(port: type) -> dict[str, inspect.Signature]:
    out = {}
    for klass in port.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if callable(value) and not name.startswith("_"):
                out.setdefault(name, inspect.signature(value))
    return out


def shape(sig: inspect.Signature) -> tuple[list[str], set[str]]:
    """The positional parameters in order (the transaction's name aside), the keyword-only ones in any order."""
    params = [p for p in sig.parameters.values() if p.name not in ("self", "conn", "tx")]
    return ([p.name for p in params if p.kind is not p.KEYWORD_ONLY],
            {p.name for p in params if p.kind is p.KEYWORD_ONLY})


@pytest.mark.parametrize(("port", "impl"), [(p, i) for p, impls in PORTS for i in impls],
                         ids=[f"{p.__name__}-{i.__name__}" for p, impls in PORTS for i in impls])
def test_an_implementation_takes_the_ports_parameters(port: type, impl: type) -> None:
    for name, sig in members(port).items():
        method = getattr(impl, name, None)
        assert method is not None, f"{impl.__name__} has no {name}"
        assert shape(inspect.signature(method)) == shape(sig), f"{impl.__name__}.{name}"
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(getattr(port, name)), name
