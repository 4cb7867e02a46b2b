"""talking-heads: few-shot adversarial talking-head models (Zakharov et al., 2019).

Layout (the file tree names the paper's parts): `config` (all settings), `models/` (embedder E, generator G,
projection discriminator D, perceptual nets), `losses`, `train/` (meta-learning, fine-tuning, shared steps),
`landmarks/` and `data/` (paper section 2), `pipeline` (few-shot avatars and puppeteering), `metrics/`
(evaluation), `cli/` (argument parsing only).
"""

__version__ = "0.1.0"
