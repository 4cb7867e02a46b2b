"""Training: the two adversarial updates (`steps.GanStep`), meta-learning (`meta`), few-shot fine-tuning
(`finetune`). Paper sections 1, 4, 5, 6 (../shared/design/paper.md).

Heavy submodules are imported on use: `from talking_heads.train.meta import train`,
`from talking_heads.train.finetune import finetune`.
"""

from .steps import GanStep

__all__ = ["GanStep"]
