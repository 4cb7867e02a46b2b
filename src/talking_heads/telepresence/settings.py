"""Telepresence settings: one dataclass, one trailing comment per field (the model's `config.Config` holds
model settings and travels in every `config.json`; these belong to a running service, not to a model, so
they live here). The CLI's options override single fields (`talking-heads send --step 0.75`, ...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TelepresenceConfig:
    """Codec, transport limits and receiver behaviour (docs/telepresence.md)."""

    # codec (sender side; the receiver reads them from the key frames)
    crop_size: int = 256  # side (px) of the sender's crop that landmark coordinates refer to
    version: int = 3  # packet format the sender writes (3: with the gaze; 2 or 1 for old receivers; receivers read all three)
    step: float = 0.65625  # quantisation step q (px at the crop; a multiple of 1/64: 42/64, the coarsest with every test clip <= 0.25 px)
    deadzone: float = 0.15  # encoder's dead zone (fraction of q) for prediction errors
    key_interval: int = 100  # frames between key frames: a lost packet costs at most this many frames (4 s at 25 fps)
    use_basis: bool = True  # code on the shipped shape basis (False: point by point, previous-frame prediction)
    smooth: bool = True  # One Euro filter on the tracked landmarks before coding (less jitter, fewer bits)
    smooth_space: str = "basis"  # "basis": filter the motion coefficients (basis.BasisFilter); "points": each coordinate
    # transport and security (receiver side)
    host: str = "127.0.0.1"  # address the receiver binds (another one only when told)
    port: int = 8765  # TCP port of the receiver (WebSocket for the sender and the page on the same port)
    open_timeout: float = 2.0  # s: a connection that has not completed its authenticated handshake is closed
    idle_timeout: float = 10.0  # s: an authenticated sender that sends nothing for this long is closed
    max_packet: int = 1024  # bytes: larger messages close the connection (WebSocket close 1009)
    max_packet_rate: float = 60.0  # packets/s a sender may send on average (token bucket)
    max_voice_rate: float = 75.0  # voice packets/s a sender may send on average (50/s: one per 20 ms)
    rate_burst: int = 30  # packets a sender may send at once above the average rate
    rate_violations: int = 60  # packets over the rate limit that close the connection (1008)
    bad_packets: int = 25  # undecodable packets that close a sender's connection (1008)
    max_senders: int = 1  # senders streaming at once (others get HTTP 409)
    max_viewers: int = 4  # browser pages watching at once (others get HTTP 503)
    max_connections: int = 32  # open connections of any kind past the handshake (others get HTTP 503)
    # receiver
    reference: str = "auto"  # neutral reference for adaptation: "auto" (most neutral face of the first seconds, live.py) or "first"
    eye_contact: bool = False  # the sender's sustained gaze turned towards the camera (models that render gaze; live.py)
    jpeg_quality: int = 80  # quality of the frames sent to the page
    stats_interval: float = 0.5  # s between statistics updates on the page
    record_queue: int = 8  # rendered frames waiting for the mp4 writer (the renderer waits when full)
