"""Acceptance: arbitrary byte streams and split points never crash the MLLP listener.

Runs the real engine (listener, runtime, store). Each connection ends in responses that
are well-formed ACK/NACK frames, or a clean close; afterwards a valid message still gets AA.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.testing.peers import EngineThread, mllp_exchange, msa

pytestmark = pytest.mark.integration

CHANNEL = """
    name: fuzz-in
    source:
      type: mllp
      listen: 127.0.0.1:0
      max_frame_bytes: 4096
      idle_timeout_secs: 2
    pipeline:
      datatype: hl7v2
"""

VALID = b"MSH|^~\\&|A|B|C|D|20261122||ADT^A01|FUZZ1|P|2.5\rPID|1||X\r"
pieces = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\x0b", b"\x1c", b"\x1c\r", b"\r", b"\n", b"MSH|^~\\&|", b"|", b"^", b"\\", VALID]),
)


def _drain(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    project: Path = tmp_path_factory.mktemp("fuzz")
    (project / "channels").mkdir()
    import textwrap

    (project / "channels" / "fuzz-in.yaml").write_text(textwrap.dedent(CHANNEL), encoding="utf-8")
    with EngineThread(project) as engine:
        yield engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.lists(pieces, max_size=6).map(b"".join), max_size=12))
def test_arbitrary_streams_end_in_acks_or_clean_close(running: EngineThread, chunks: list[bytes]) -> None:
    _, port = running.address("fuzz-in")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        answer = _drain(sock)
    for frame in [f for f in answer.split(b"\x1c\r") if f]:
        assert frame.startswith(b"\x0b"), f"bytes outside a response frame: {frame[:40]!r}"
        code, _ = msa(frame[1:])
        assert code in ("AA", "AE", "AR"), f"response frame without an MSA: {frame[:80]!r}"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert msa(mllp_exchange(sock, VALID)) == ("AA", "FUZZ1")
