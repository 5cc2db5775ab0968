"""The sans-IO MLLP framer on bytes, plus the small pure helpers of the MLLP connector."""

from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.connectors.mllp import MLLP_DESTINATION, MLLP_SOURCE, MllpDestinationConfig, MllpSourceConfig
from engine.connectors.mllp.acks import Ack, control_id, read_ack
from engine.connectors.mllp.config import split_host_port
from engine.connectors.mllp.framing import Event, Frame, Garbage, Incomplete, MllpFramer, Oversize, frame

MSG_A = b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|202401011200||ADT^A01|CTRL1|P|2.5\rPID|1||123\r"
MSG_B = b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|202401011201||ADT^A08|CTRL2|P|2.5\rPID|1||456\r"


def feed_chunks(framer: MllpFramer, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events + framer.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- frames and boundaries ---------------------------------------------------------


def test_one_frame() -> None:
    assert MllpFramer().feed(frame(MSG_A)) == [Frame(MSG_A)]


def test_frame_split_at_every_boundary() -> None:
    stream = frame(MSG_A) + frame(MSG_B)
    for cut in range(1, len(stream)):
        events = feed_chunks(MllpFramer(), [stream[:cut], stream[cut:]])
        assert events == [Frame(MSG_A), Frame(MSG_B)], cut


def test_byte_by_byte() -> None:
    stream = frame(MSG_A) + frame(MSG_B)
    assert feed_chunks(MllpFramer(), [bytes([b]) for b in stream]) == [Frame(MSG_A), Frame(MSG_B)]


def test_several_frames_in_one_read() -> None:
    payloads = [MSG_A, MSG_B, MSG_A]
    assert MllpFramer().feed(b"".join(frame(p) for p in payloads)) == [Frame(p) for p in payloads]


def test_frame_is_emitted_when_the_end_block_arrives_not_later() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0b" + MSG_A) == []
    assert framer.pending_bytes == len(MSG_A)
    assert framer.feed(b"\x1c") == [Frame(MSG_A)]
    assert framer.pending_bytes == 0


# --- bytes outside frames -------------------------------------------------------------


def test_crlf_between_frames_is_tolerated_silently() -> None:
    stream = b"\r\n" + frame(MSG_A) + b"\n" + frame(MSG_B) + b"\r\n"
    assert feed_chunks(MllpFramer(), [stream]) == [Frame(MSG_A), Frame(MSG_B)]


def test_garbage_is_counted_never_kept() -> None:
    stream = b"junk" + frame(MSG_A) + b"xy\r\nz" + frame(MSG_B) + b"tail!"
    events = feed_chunks(MllpFramer(), [stream])
    assert events == [Garbage(4), Frame(MSG_A), Garbage(3), Frame(MSG_B), Garbage(5)]


def test_garbage_count_does_not_depend_on_chunking() -> None:
    stream = b"abc" + frame(MSG_A)
    assert feed_chunks(MllpFramer(), [bytes([b]) for b in stream]) == [Garbage(3), Frame(MSG_A)]


def test_end_block_outside_a_frame_is_garbage() -> None:
    assert feed_chunks(MllpFramer(), [b"\x1c\r" + frame(MSG_A)]) == [Garbage(1), Frame(MSG_A)]


# --- broken senders ---------------------------------------------------------------


def test_missing_end_block_ends_the_frame_at_the_next_start_block() -> None:
    stream = b"\x0b" + MSG_A + b"\x0b" + MSG_B + b"\x1c\r"
    assert MllpFramer().feed(stream) == [Frame(MSG_A), Frame(MSG_B)]


def test_end_block_without_cr_ends_the_frame() -> None:
    stream = b"\x0b" + MSG_A + b"\x1c" + b"\x0b" + MSG_B + b"\x1c"
    assert MllpFramer().feed(stream) == [Frame(MSG_A), Frame(MSG_B)]


def test_byte_after_a_bare_end_block_is_processed_normally() -> None:
    events = feed_chunks(MllpFramer(), [b"\x0b" + MSG_A + b"\x1cX" + frame(MSG_B)])
    assert events == [Frame(MSG_A), Garbage(1), Frame(MSG_B)]


def test_cr_of_the_end_block_may_arrive_in_the_next_read() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0b" + MSG_A + b"\x1c") == [Frame(MSG_A)]
    assert framer.feed(b"\r") == []
    assert framer.close() == []


def test_empty_frames_are_ignored() -> None:
    stream = b"\x0b\x1c\r" + frame(MSG_A) + b"\x0b\x0b\x1c\r"
    assert feed_chunks(MllpFramer(), [stream]) == [Frame(MSG_A)]


def test_unfinished_frame_is_reported_on_close() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0b" + MSG_A[:10]) == []
    assert framer.close() == [Incomplete(10)]
    assert framer.feed(frame(MSG_B)) == [Frame(MSG_B)]  # usable again after close


# --- oversize -----------------------------------------------------------------------


def test_payload_at_the_limit_is_a_frame() -> None:
    payload = b"x" * 100
    assert MllpFramer(max_frame_bytes=100).feed(frame(payload)) == [Frame(payload)]


def test_oversize_frame_keeps_a_prefix_and_the_size() -> None:
    payload = MSG_A + b"y" * 1000
    events = MllpFramer(max_frame_bytes=100, prefix_bytes=20).feed(frame(payload))
    assert events == [Oversize(payload[:20], len(payload))]


def test_oversize_frame_split_in_small_reads_then_next_frame_is_fine() -> None:
    payload = b"z" * 5000
    stream = frame(payload) + frame(MSG_A)
    framer = MllpFramer(max_frame_bytes=1000, prefix_bytes=64)
    events = feed_chunks(framer, [stream[i : i + 7] for i in range(0, len(stream), 7)])
    assert events == [Oversize(payload[:64], 5000), Frame(MSG_A)]


def test_oversize_memory_stays_bounded() -> None:
    framer = MllpFramer(max_frame_bytes=1000, prefix_bytes=64)
    framer.feed(b"\x0b")
    for _ in range(200):
        framer.feed(b"q" * 997)
        assert len(framer._buf) <= 1000
    assert framer.pending_bytes == 200 * 997
    assert framer.feed(b"\x1c\r") == [Oversize(b"q" * 64, 200 * 997)]


def test_oversize_frame_ended_by_a_start_block() -> None:
    stream = b"\x0b" + b"w" * 50 + frame(MSG_A)
    events = MllpFramer(max_frame_bytes=20, prefix_bytes=5).feed(stream)
    assert events == [Oversize(b"wwwww", 50), Oversize(MSG_A[:5], len(MSG_A))]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError, match="positive"):
        MllpFramer(max_frame_bytes=0)


# --- properties ---------------------------------------------------------------------

SPECIAL = st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"\x1c\r", b"MSH|"])
STREAM = st.lists(st.one_of(st.binary(max_size=40), SPECIAL), max_size=30).map(b"".join)
PAYLOAD = st.binary(min_size=1, max_size=300).filter(lambda p: b"\x0b" not in p and b"\x1c" not in p)


@settings(max_examples=200, deadline=None)
@given(stream=STREAM, cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=20))
def test_arbitrary_bytes_any_chunking_same_events(stream: bytes, cuts: list[int]) -> None:
    whole = feed_chunks(MllpFramer(max_frame_bytes=64, prefix_bytes=8), [stream])
    chunked = feed_chunks(MllpFramer(max_frame_bytes=64, prefix_bytes=8), split_at(stream, cuts))
    assert chunked == whole
    for event in whole:
        if isinstance(event, Frame):
            assert 0 < len(event.payload) <= 64
        elif isinstance(event, Oversize):
            assert event.size > 64
            assert len(event.prefix) == 8


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(PAYLOAD, min_size=1, max_size=8),
    gaps=st.lists(st.sampled_from([b"", b"\r", b"\n", b"\r\n"]), min_size=9, max_size=9),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
)
def test_valid_frames_survive_any_chunking(payloads: list[bytes], gaps: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(gap + frame(payload) for gap, payload in zip(gaps, payloads, strict=False)) + gaps[-1]
    events = feed_chunks(MllpFramer(), split_at(stream, cuts))
    assert events == [Frame(p) for p in payloads]


# --- the minimal HL7 reader -----------------------------------------------------------


def test_control_id_of_a_message() -> None:
    assert control_id(MSG_A) == "CTRL1"
    assert control_id(b"\xef\xbb\xbfMSH#^~\\&#A#B#C#D#T##ADT#X9#P#2.5\nPID#1") == "X9"


def test_control_id_when_absent() -> None:
    assert control_id(b"not hl7 at all") == ""
    assert control_id(b"MSH|^~\\&|A|B") == ""


def test_read_ack_fields() -> None:
    ack = b"MSH|^~\\&|LAB||EHR||202401011200||ACK^A01|A9|P|2.5\r\nMSA|ae|CTRL1|Unknown code\x07 in OBR-4|\r"
    assert read_ack(ack) == Ack(code="AE", control_id="CTRL1", text="Unknown code  in OBR-4")


def test_read_ack_truncates_text_and_handles_missing_msa() -> None:
    ack = read_ack(b"MSA|AR|C1|" + b"t" * 500)
    assert ack is not None
    assert len(ack.text) == 200
    assert read_ack(b"MSH|^~\\&|LAB\rERR|x") is None


# --- config -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [MLLP_SOURCE, MLLP_DESTINATION], ids=["source", "destination"])
def test_spec_examples_validate(spec: object) -> None:
    for example in spec.examples:  # type: ignore[attr-defined]
        spec.config.model_validate(yaml.safe_load(example.yaml))  # type: ignore[attr-defined]


def test_split_host_port() -> None:
    assert split_host_port("0.0.0.0:6661") == ("0.0.0.0", 6661)
    assert split_host_port("[::1]:0") == ("::1", 0)
    for bad in ("6661", "host:", ":6661", "host:70000", "host:x1"):
        with pytest.raises(ValueError, match=r"host:port|port must"):
            split_host_port(bad)


def test_source_config_rejects_a_bad_listen_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="expected host:port"):
        MllpSourceConfig(type="mllp", listen="6661")
    with pytest.raises(ValidationError, match="extra"):
        MllpSourceConfig.model_validate({"type": "mllp", "listen": "0.0.0.0:1", "lisen": "x"})


def test_destination_config_allows_an_empty_endpoint_but_not_port_zero() -> None:
    assert MllpDestinationConfig(type="mllp", name="lab", endpoint="").endpoint == ""
    with pytest.raises(ValidationError, match="port must"):
        MllpDestinationConfig(type="mllp", name="lab", endpoint="lab:0")


def test_tls_require_client_cert_needs_a_ca() -> None:
    with pytest.raises(ValidationError, match="client_ca_file"):
        MllpSourceConfig.model_validate(
            {
                "type": "mllp",
                "listen": "0.0.0.0:1",
                "tls": {"cert_file": "c", "key_file": "k", "require_client_cert": True},
            }
        )
