"""The landmark codec (telepresence issue 14, item 1) on landmarks tracked from a real test-split clip:
round trip within the stated precision, sequence numbers and timestamps, key frames and recovery from a lost
packet, the shape basis, and hostile bytes (hypothesis fuzzing: the decoder returns a frame or raises
CodecError, and its memory stays bounded)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from talking_heads.telepresence.codec import (DELTA_MARK, KEY_HEADER, KEY_MAGIC, MAX_PACKET, ArithmeticDecoder,
                                              ArithmeticEncoder, Basis, CodecError, CropBox, LandmarkDecoder,
                                              LandmarkEncoder, StreamGap, put_int, take_int)

CLIP = "videos/test/lp_driving_d2_old.mp4"  # 16 frames, 30 fps, the mouth opens
BOX = CropBox(100, 40, 300, 256)


@pytest.fixture(scope="module")
def track(shared_data):
    """What the sender codes for the clip: per frame (68,2) points in its 256 px crop, smoothed and raw."""
    from talking_heads.data.video import read_frames
    from talking_heads.telepresence.sender import LandmarkStream
    from talking_heads.telepresence.settings import TelepresenceConfig

    out = {}
    for smooth in (True, False):
        stream = LandmarkStream(30.0, TelepresenceConfig(smooth=smooth))
        out[smooth] = [stream.landmarks(frame, i / 30) for i, frame in read_frames(shared_data / CLIP)]
    assert all(p is not None for p in out[True]) and len(out[True]) == 16
    return out


@pytest.fixture(scope="module")
def basis():
    from talking_heads.telepresence.basis import load_basis

    return load_basis()


def _run(points, basis, *, step=0.5, predictor=2, key_interval=50):
    enc = LandmarkEncoder(basis, fps=30, step=step, predictor=predictor, key_interval=key_interval)
    packets = [enc.encode(p, 1_000_000 + round(i * 1000 / 30), BOX) for i, p in enumerate(points)]
    dec = LandmarkDecoder(basis)
    return packets, [dec.decode(pk) for pk in packets]


def _error(points, frames) -> float:
    return float(np.mean([np.linalg.norm(f.points - p, axis=1).mean() for p, f in zip(points, frames)]))


def test_round_trip_within_the_stated_precision(track, basis):
    points = track[True]
    packets, frames = _run(points, basis)
    assert [f.seq for f in frames] == list(range(16))
    assert [f.timestamp_ms for f in frames] == [1_000_000 + round(i * 1000 / 30) for i in range(16)]
    assert frames[0].key and not any(f.key for f in frames[1:]) and frames[0].crop == BOX and frames[0].fps == 30
    assert packets[0][:4] == KEY_MAGIC and all(pk[0] & 0xF0 == DELTA_MARK and len(pk) < 60 for pk in packets[1:])
    assert _error(points, frames) <= 0.25  # the target at a 256 px crop (uniform step 0.5: ~0.19)
    coarse = _error(points, _run(points, basis, step=1.5)[1])
    assert 0.25 < coarse < 0.75  # a coarser step: larger error, still bounded by the step
    for p, f in zip(points, frames):
        assert np.abs(f.points - p).max() < 1.5  # no point is far off


def test_the_shape_basis_lowers_the_bitrate_at_equal_error(track, basis):
    for smooth, predictor in ((True, 2), (False, 1)):
        points = track[smooth]
        with_basis, frames_b = _run(points, basis, predictor=predictor)
        plain, frames_p = _run(points, Basis.identity(), predictor=0)
        bits_b, bits_p = sum(map(len, with_basis)), sum(map(len, plain))
        assert bits_b < 0.8 * bits_p, (bits_b, bits_p)
        assert _error(points, frames_b) < 1.1 * _error(points, frames_p)


def test_a_lost_packet_costs_at_most_until_the_next_key_frame(track, basis):
    points = track[True]
    packets, frames = _run(points, basis, key_interval=5)
    assert [i for i, f in enumerate(frames) if f.key] == [0, 5, 10, 15]
    dec = LandmarkDecoder(basis)
    decoded = {}
    for i, pk in enumerate(packets):
        if i == 2:
            continue  # lost
        try:
            decoded[i] = dec.decode(pk)
        except StreamGap:
            assert 3 <= i < 5
    assert sorted(decoded) == [0, 1] + list(range(5, 16))  # frames 3 and 4 wait for the key frame 5
    for i, f in decoded.items():  # from the key frame on, exactly what a lossless decoder gets
        np.testing.assert_array_equal(f.points, frames[i].points)
    with pytest.raises(StreamGap, match="before any key frame"):
        LandmarkDecoder(basis).decode(packets[1])


def test_frames_without_a_face_and_the_end_marker(track, basis):
    enc = LandmarkEncoder(basis, fps=25, predictor=2)
    seq = [track[True][0], None, np.full((68, 2), np.nan), track[True][1]]
    packets = [enc.encode(p, 40 * i, BOX) for i, p in enumerate(seq)]
    packets.append(enc.encode(None, 160, BOX, end=True))
    dec = LandmarkDecoder(basis)
    frames = [dec.decode(pk) for pk in packets]
    assert [f.points is None for f in frames] == [False, True, True, False, True]  # NaN points: no face
    assert frames[3].key  # a face coming back starts with a key frame
    assert frames[-1].end and not any(f.end for f in frames[:-1])
    assert len(packets[1]) <= 3  # "no face" costs a header and a byte at most
    changed = enc.encode(track[True][2], 200, CropBox(0, 0, 512, 256))
    assert changed[:4] == KEY_MAGIC  # a new crop box is announced by a key frame


@given(st.lists(st.tuples(st.integers(-5000, 5000), st.integers(0, 15)), min_size=0, max_size=200))
@settings(max_examples=300, deadline=None, database=None)
def test_arithmetic_coding_round_trips_any_integers(values):
    enc = ArithmeticEncoder()
    for v, cls in values:
        put_int(enc, v, cls)
    dec = ArithmeticDecoder(enc.finish())
    assert [take_int(dec, cls) for _, cls in values] == [v for v, _ in values]


# --- hostile bytes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_packets(track, basis):
    return _run(track[True], basis)[0]


def _decode_hostile(dec: LandmarkDecoder, data: bytes) -> None:
    try:
        frame = dec.decode(data)
    except CodecError:
        return
    if frame.points is not None:  # whatever a hostile packet decodes to is a finite, bounded shape
        assert frame.points.shape == (68, 2) and np.isfinite(frame.points).all()
        assert np.abs(frame.points).max() <= 2 * frame.crop.size


FUZZ = settings(max_examples=1500, deadline=None, database=None,  # no .hypothesis folder in the checkout
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(data=st.binary(max_size=MAX_PACKET + 64))
@FUZZ
def test_random_bytes_never_crash_the_decoder(basis, valid_packets, data):
    dec = LandmarkDecoder(basis)
    dec.decode(valid_packets[0])  # a decoder in the middle of a stream
    _decode_hostile(dec, data)
    _decode_hostile(dec, KEY_MAGIC + data)  # past the magic
    _decode_hostile(dec, bytes([DELTA_MARK | 0x01, 1]) + data)  # a plausible delta header


@given(st.data())
@FUZZ
def test_truncated_and_bit_flipped_packets_never_crash_the_decoder(basis, valid_packets, data):
    i = data.draw(st.integers(0, len(valid_packets) - 1))
    packet = bytearray(valid_packets[i])
    flips = data.draw(st.lists(st.integers(0, 8 * len(packet) - 1), max_size=6))
    for bit in flips:
        packet[bit // 8] ^= 1 << (bit % 8)
    cut = data.draw(st.integers(0, len(packet)))
    dec = LandmarkDecoder(basis)
    for pk in valid_packets[:i]:
        dec.decode(pk)
    _decode_hostile(dec, bytes(packet[:cut]))
    _decode_hostile(dec, bytes(packet))


@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
                 st.integers(0, 65535), st.integers(0, 255), st.integers(0, 65535), st.integers(-32768, 32767),
                 st.integers(-32768, 32767), st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255)),
       st.binary(max_size=600))
@FUZZ
def test_key_frames_with_absurd_fields_are_refused_or_bounded(basis, fields, payload):
    header = KEY_HEADER.pack(KEY_MAGIC, *fields)
    _decode_hostile(LandmarkDecoder(basis), header + payload)


def test_specific_hostile_packets_are_refused_with_a_reason(basis, valid_packets):
    dec = LandmarkDecoder(basis)
    key = bytearray(valid_packets[0])
    cases = {
        "exceeds the 1024-byte limit": b"THLM" + bytes(2000),
        "bad magic": b"GET / HTTP/1.1\r\n\r\n",
        "unsupported packet version 2": bytes(key[:4]) + b"\x02" + bytes(key[5:]),
        "reserved flag bits": bytes(key[:5]) + b"\x80" + bytes(key[6:]),
        "key frame truncated": bytes(key[:10]),
        "unknown transform 9": bytes(key[:KEY_HEADER.size - 2]) + b"\x09\x02" + bytes(key[KEY_HEADER.size:]),
        "quantisation step 0": bytes(key[:16]) + b"\x00" + bytes(key[17:]),
        "crop size": bytes(key[:17]) + b"\xff\xff" + bytes(key[19:]),
        "a packet is bytes": "THLM",
    }
    for reason, packet in cases.items():
        with pytest.raises(CodecError, match=reason):
            dec.decode(packet)
    nan_bytes = np.array([np.nan] * 100, np.float64).tobytes()  # NaN bit patterns are just bytes to the decoder
    _decode_hostile(dec, bytes(key[:KEY_HEADER.size]) + nan_bytes[:500])
    _decode_hostile(dec, bytes(key[:KEY_HEADER.size]) + b"\xff" * 600)  # escapes everywhere: bounded or refused


def test_decoding_hostile_packets_allocates_a_bounded_amount(basis, valid_packets):
    rng = np.random.default_rng(0)
    dec = LandmarkDecoder(basis)
    dec.decode(valid_packets[0])
    tracemalloc.start()
    try:
        for i in range(400):
            size = int(rng.integers(0, MAX_PACKET + 1))
            head = [KEY_MAGIC, bytes([DELTA_MARK | 1, 1]), b""][i % 3]
            _decode_hostile(dec, head + rng.bytes(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak  # a few hundred kB of decoder state and big integers, never more
