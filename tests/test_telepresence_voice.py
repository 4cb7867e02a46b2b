"""Voice for telepresence (`telepresence/voice.py`): Opus packets from a real clip's speech, decoded back; what
a receiver refuses; the recording's placement of sound by capture time. The loopback call with voice is in
test_telepresence_net.py."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.telepresence.voice import (FRAME, HEADER, MAX_PACKET, RATE, VOICE_MAGIC, VoiceDecoder, VoiceEncoder,
                                              VoiceError, VoiceRecording, file_voice, parse)

SPEECH = "videos/test/pcavs_Audio_Source_00015.mp4"  # 7 s of speech, 16 kHz in the file


def test_speech_survives_opus_at_about_24_kbit(shared_data):
    pcm = np.concatenate(list(file_voice(shared_data / SPEECH)))
    assert abs(len(pcm) / RATE - 6.96) < 0.1 and np.abs(pcm).mean() > 500  # resampled to 48 kHz mono
    encoder, decoder = VoiceEncoder(), VoiceDecoder()
    packets = []
    for i in range(0, len(pcm), 3000):  # chunks of any size, as a microphone or a file gives them
        packets += encoder.encode(pcm[i:i + 3000], 1000.0 + 1000.0 * i / RATE)
    assert len(packets) == len(pcm) // FRAME
    stamps = [parse(p)[1] for p in packets]
    assert stamps[:3] == [1000, 1020, 1040] and np.all(np.diff(stamps) == 20)  # each packet's own capture time
    kbps = sum(map(len, packets)) * 8 / (len(packets) * FRAME / RATE) / 1000
    assert 16 <= kbps <= 32 and max(map(len, packets)) < MAX_PACKET
    out = np.concatenate([decoder.decode(p)[1] for p in packets])
    hop = RATE // 20  # 50 ms envelopes (Opus adds 6.5 ms of delay)
    a = np.sqrt((pcm[:len(out) // hop * hop].astype(float).reshape(-1, hop) ** 2).mean(1))
    b = np.sqrt((out[:len(out) // hop * hop].astype(float).reshape(-1, hop) ** 2).mean(1))
    delay = int(np.argmax([np.corrcoef(a[:-5], b[k:len(b) - 5 + k])[0, 1] for k in range(5)]))
    assert np.corrcoef(a[:-5], b[delay:len(b) - 5 + delay])[0, 1] > 0.95 and delay == 0


def test_bad_voice_packets_are_refused():
    decoder = VoiceDecoder()
    good = VoiceEncoder().encode(np.zeros(FRAME, np.int16), 0.0)[0]
    for bad, message in [(b"", "bytes"), (b"THV1" + bytes(8), "bytes"), (b"JUNK" + bytes(20), "bad magic"),
                         (HEADER.pack(VOICE_MAGIC, 0, 0) + bytes(MAX_PACKET), "bytes")]:
        with pytest.raises(VoiceError, match=message):
            decoder.decode(bad)
    rng = np.random.default_rng(1)
    refused = 0
    for _ in range(200):  # random Opus payloads: refused, or decoded to at most 120 ms; never a crash
        try:
            _, pcm = decoder.decode(HEADER.pack(VOICE_MAGIC, 0, 0) + bytes(rng.integers(0, 256, 60, dtype=np.uint8)))
            assert pcm.dtype == np.int16 and pcm.size <= 6 * FRAME
        except VoiceError:
            refused += 1
    assert decoder.decode(good)[1].size == FRAME  # the decoder still works afterwards
    assert refused > 0


def test_the_recording_places_sound_by_capture_time_and_is_bounded():
    """On disk, not in memory (a 10-minute call is 57 MB at 48 kHz), placed by capture time, bounded."""
    rec = VoiceRecording(seconds=2.0)
    tone = np.full(FRAME, 1000, np.int16)
    rec.add(0.0, tone)
    rec.add(500.0, tone)  # 0.5 s later: silence between
    rec.add(-40.0, tone)  # before the recording's start: dropped
    rec.add(1990.0, tone)  # past its 2 s: dropped
    pcm = rec.pcm()
    assert len(pcm) == RATE // 2 + FRAME and rec.dropped == 2 * FRAME
    assert (pcm[:FRAME] == 1000).all() and (pcm[FRAME:RATE // 2] == 0).all() and (pcm[RATE // 2:] == 1000).all()
    rec.close()
    assert rec.pcm().size == 0


def test_the_capture_page_takes_only_its_key_and_its_own_messages(shared_data):
    """`send --browser`'s page server: the page needs the printed key (403), one page at a time (1013), garbage
    closes it after live_bad_frames (1008); camera frames and microphone chunks reach the source."""
    import asyncio
    import struct
    import threading

    import cv2
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from talking_heads.data.video import read_frames
    from talking_heads.telepresence.browser_sender import MIC_MAGIC, BrowserSource, CapturePage
    from talking_heads.web.live import IN_HEADER, IN_MAGIC

    frames = [f for i, f in read_frames(shared_data / SPEECH) if i < 3]

    async def main():
        source = BrowserSource()
        page = CapturePage(source)
        port = await page.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/capture?key="
        with pytest.raises(InvalidStatus, match="403"):
            async with connect(url + "wrong"):
                pass
        async with connect(url + page.key) as ws:
            async with connect(url + page.key) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), 5)
                assert closed.value.rcvd.code == 1013
            for i, f in enumerate(frames):
                jpeg = cv2.imencode(".jpg", np.ascontiguousarray(f[:, :, ::-1]))[1].tobytes()
                await ws.send(IN_HEADER.pack(IN_MAGIC, i + 1, 1000.0 + 40 * i) + jpeg)
            await ws.send(MIC_MAGIC + struct.pack("<d", 1000.0) + np.zeros(FRAME, "<i2").tobytes())
            await asyncio.sleep(0.3)
            got = []
            reader = threading.Thread(target=lambda: got.append(next(source.frames())))
            reader.start()
            reader.join(5)
            assert got and got[0][1].shape == frames[-1].shape and got[0][2] == 1.08  # the newest frame, its time
            t_ms, pcm = source.mic.get_nowait()
            assert t_ms == 1000.0 and pcm.size == FRAME
            for _ in range(30):
                try:
                    await ws.send(b"garbage" * 3)
                    await asyncio.sleep(0.01)
                except ConnectionClosed:
                    break
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1008
        assert source.ended.is_set()  # the page left: the stream ends
        await page.close()

    asyncio.run(main())
