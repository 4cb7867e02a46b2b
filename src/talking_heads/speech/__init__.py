"""Speech-driven avatars: a voice recording (or a sentence spoken by espeak-ng) moves the avatar's mouth.

Beyond the paper (which drives avatars by another person's landmarks only). A landmark-driven renderer makes
the audio side small: speech -> the motion of the mouth and chin in landmark space -> the same puppeteering
stage every other driver goes through (adaptation to the avatar's face, rendering, writing with the sound).

- `audio.py`: reading any file's sound (wav, mp3, m4a, a video's track) as 16 kHz mono, bounded and checked;
  log-mel features (100 frames/s) and the loudness envelope.
- `motion.py`: the motion space: mouth (48-67) and chin (2-14) points relative to the speaker's neutral face,
  head pose removed, in inter-ocular units; placing such a motion onto any landmark sequence (the head's).
- `model.py`: `AudioToMotion`, dilated causal 1-D convolutions with a set look-ahead (0.2 s offline).
- `train.py`: pairs of sound and landmarks from a `preprocess`ed folder; augmentation (gain, noise, speed,
  telephone band); the training loop, resumable, with a time limit.
- `drive.py`: `speech_driver(audio, head=...)`: a `DriverSequence` whose mouth follows the sound and whose
  head and blinks come from a built-in motion (`idle`) or a driver video.
- `evaluate.py`: mouth landmark distance, opening correlation and audio-video offset on people the model never
  heard, against two baselines (loudness, no motion).
"""
