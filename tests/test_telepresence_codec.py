"""The landmark codec (telepresence issue 14, item 1) on landmarks tracked from a real test-split clip:
round trip within the stated precision, sequence numbers and timestamps, key frames and recovery from a lost
packet, the shape basis, packet format v2 (and v1, which the decoder still reads), the sender's basis
filter, and hostile bytes (hypothesis fuzzing of both versions: the decoder returns a frame or raises
CodecError, and its memory stays bounded)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from talking_heads.telepresence.codec import (DELTA2_END, DELTA2_FACE, DELTA2_MARK, DELTA_MARK, KEY_HEADER,
                                              KEY_MAGIC, MAX_PACKET, ArithmeticDecoder, ArithmeticEncoder, Basis,
                                              CodecError, CropBox, LandmarkDecoder, LandmarkEncoder, StreamGap,
                                              put_int, take_int)

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


def _run(points, basis, *, step=0.5, predictor=2, key_interval=50, version=2):
    enc = LandmarkEncoder(basis, fps=30, step=step, predictor=predictor, key_interval=key_interval, version=version)
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
    assert packets[0][:4] == KEY_MAGIC and packets[0][4] == 2
    assert all(pk[0] == DELTA2_MARK | DELTA2_FACE | i % 32 and len(pk) < 60 for i, pk in enumerate(packets[1:], 1))
    assert _error(points, frames) <= 0.25  # the target at a 256 px crop (uniform step 0.5: ~0.19)
    coarse = _error(points, _run(points, basis, step=1.5)[1])
    assert 0.25 < coarse < 0.75  # a coarser step: larger error, still bounded by the step
    for p, f in zip(points, frames):
        assert np.abs(f.points - p).max() < 1.5  # no point is far off


def test_version_1_streams_still_decode(track, basis):
    points = track[True]
    packets, frames = _run(points, basis, version=1)
    assert packets[0][4] == 1 and all(pk[0] == DELTA_MARK | 0x01 and pk[1] == i for i, pk in enumerate(packets[1:], 1))
    assert [f.seq for f in frames] == list(range(16)) and _error(points, frames) <= 0.25
    dec = LandmarkDecoder(basis)  # one decoder, a v1 stream then a v2 stream (a sender upgraded mid-call)
    for pk in packets + _run(points, basis, version=2)[0]:
        assert dec.decode(pk).points is not None
    with pytest.raises(CodecError, match="bad magic"):  # a v2 delta byte inside a v1 stream is not a v1 delta
        dec2 = LandmarkDecoder(basis)
        dec2.decode(packets[0])
        dec2.decode(bytes([DELTA2_MARK | DELTA2_FACE | 1]))


def test_version_2_costs_fewer_bits_than_version_1(track, basis):
    for smooth, predictor, gain in ((True, 2, 0.85), (False, 1, 1.0)):  # raw tracks: the trend predictor gains little
        points = track[smooth]
        v2, frames2 = _run(points, basis, predictor=predictor, step=0.75)
        v1, frames1 = _run(points, basis, predictor=predictor, step=0.75, version=1)
        assert sum(map(len, v2[1:])) < gain * sum(map(len, v1[1:])), (smooth, sum(map(len, v2)), sum(map(len, v1)))
        assert _error(points, frames2) < 1.1 * _error(points, frames1)


def test_version_2_delta_byte_flags_and_gaps(track, basis):
    enc = LandmarkEncoder(basis, fps=25, predictor=2)
    packets = [enc.encode(track[True][i % 16], 40 * i, BOX) for i in range(40)]
    packets.append(enc.encode(None, 1600, BOX, end=True))
    assert all(pk[0] == DELTA2_MARK | DELTA2_FACE | (i % 32) for i, pk in enumerate(packets[1:40], 1))
    assert packets[-1] == bytes([DELTA2_MARK | DELTA2_END | 40 % 32])  # no face, no payload: one byte
    dec = LandmarkDecoder(basis)
    frames = [dec.decode(pk) for pk in packets]
    assert [f.seq for f in frames] == list(range(41)) and frames[-1].end and frames[-1].points is None
    assert [f.timestamp_ms for f in frames[:40]] == [40 * i for i in range(40)]
    dec = LandmarkDecoder(basis)
    dec.decode(packets[0])
    dec.decode(packets[1])
    with pytest.raises(StreamGap, match="mod 32"):
        dec.decode(packets[3])  # packet 2 lost
    with pytest.raises(StreamGap, match="waiting for a key frame"):
        dec.decode(packets[4])


def test_the_basis_filter_smooths_the_jitter_and_follows_the_motion(shared_data, basis):
    from talking_heads.data.video import read_frames
    from talking_heads.telepresence.basis import BasisFilter
    from talking_heads.telepresence.sender import LandmarkStream
    from talking_heads.telepresence.settings import TelepresenceConfig

    stream = LandmarkStream(30.0, TelepresenceConfig(smooth=False))
    raw = np.stack([stream.landmarks(frame, i / 30) for i, frame in read_frames(shared_data / CLIP)]).astype(float)
    f = BasisFilter(basis.motion_vectors)
    out = np.stack([f(p, 1 / 30) for p in raw])
    assert out.shape == raw.shape and np.isfinite(out).all()
    tail = basis.motion_vectors[:, 20:]  # the small coefficients: mostly the tracker's jitter, smoothed hard
    jitter = lambda x: np.abs(np.diff(x.reshape(16, -1) @ tail, axis=0)).mean()
    assert jitter(out) < 0.6 * jitter(raw)
    assert np.linalg.norm(out - raw, axis=2).mean() < 3.0  # px at 256: the mouth still opens (no large lag)


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


@pytest.fixture(scope="module")
def valid_v1_packets(track, basis):
    return _run(track[True], basis, version=1)[0]


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
def test_random_bytes_never_crash_the_decoder(basis, valid_packets, valid_v1_packets, data):
    dec = LandmarkDecoder(basis)
    dec.decode(valid_packets[0])  # a decoder in the middle of a stream
    _decode_hostile(dec, data)
    _decode_hostile(dec, KEY_MAGIC + data)  # past the magic
    _decode_hostile(dec, bytes([DELTA2_MARK | DELTA2_FACE | 1]) + data)  # a plausible v2 delta header
    _decode_hostile(dec, bytes([DELTA_MARK | 0x01, 1]) + data)  # a v1 one (refused: this is a v2 stream)
    dec1 = LandmarkDecoder(basis)
    dec1.decode(valid_v1_packets[0])  # a decoder in the middle of a v1 stream
    _decode_hostile(dec1, data)
    _decode_hostile(dec1, bytes([DELTA_MARK | 0x01, 1]) + data)


@given(st.data())
@FUZZ
def test_truncated_and_bit_flipped_packets_never_crash_the_decoder(basis, valid_packets, valid_v1_packets, data):
    valid_packets = data.draw(st.sampled_from([valid_packets, valid_v1_packets]))
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
        "unsupported packet version 4": bytes(key[:4]) + b"\x04" + bytes(key[5:]),
        "unsupported packet version 0": bytes(key[:4]) + b"\x00" + bytes(key[5:]),
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
            head = [KEY_MAGIC, bytes([DELTA2_MARK | DELTA2_FACE | 1]), b""][i % 3]
            _decode_hostile(dec, head + rng.bytes(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak  # a few hundred kB of decoder state and big integers, never more


def test_trend_fitting_reproduces_its_choice_on_real_tracks(track, basis):
    """basis.fit_trend picks, per coefficient, the grid entry of least squared error + lambda bits in a closed-loop
    run of the codec (here on the clip's raw track)."""
    from talking_heads.telepresence.basis import TREND_GRID, fit_trend, simulate_trend

    x = np.stack(track[False]).reshape(16, -1).astype(np.float64)
    holt, spread = fit_trend([x], basis.motion_vectors)
    assert holt.shape == (136, 3) and spread.shape == (136,) and (spread >= 1).all()
    assert all(any(np.allclose(h, g) for g in TREND_GRID) for h in holt)
    bits, sq, _, frames = simulate_trend([x], basis.motion_vectors, TREND_GRID)
    assert frames == 15 and np.isfinite(bits).all() and (bits >= 0).all()
    chosen = np.array([np.flatnonzero(np.isclose(TREND_GRID, h).all(1))[0] for h in holt])
    lam = 2 * np.log(2) * 0.75 ** 2 / 12
    cost = sq + lam * bits
    assert np.allclose(cost[chosen, np.arange(136)], cost.min(0))
