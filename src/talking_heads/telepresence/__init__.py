"""Telepresence: send face landmarks instead of video and re-create the avatar at the other end.

The paper's suggested use (Zakharov et al. 2019, section 1): the sender tracks 68 landmarks per frame, the
landmark codec squeezes them into a few bytes (`codec.py` with `packet.py`, `entropy.py` and `prediction.py`,
pure; `basis.py`, its shape basis), a WebSocket carries the packets (`transport.py`: limits; `access.py`:
tokens, TLS, addresses), and the receiver drives an avatar with the pipeline's per-frame live stage
(`live.LiveStage`) in real time, dropping stale frames rather than building a backlog (`receiver.py`), while a
browser page shows the picture and its statistics. `sender.py` reads a camera or a video file paced at its
frame rate. `demo.py` runs both ends on loopback.
See docs/telepresence.md (the packet format, the protocol, security).
"""
