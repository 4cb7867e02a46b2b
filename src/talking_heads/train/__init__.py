"""Training: the two adversarial updates (`steps`), meta-learning (`meta`), few-shot fine-tuning (`finetune`),
and the speed/memory benchmark (`bench`). Paper sections 1, 4, 5, 6 (../shared/design/paper.md).

Heavy submodules are imported on use: `from talking_heads.train.meta import train`,
`from talking_heads.train.finetune import finetune`.
"""

from .steps import discriminator_step, generator_step

__all__ = ["discriminator_step", "generator_step"]
