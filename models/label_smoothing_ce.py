"""Label-smoothing cross-entropy (Szegedy et al. 2016), the thesis's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against targets (1 - epsilon) * one_hot + epsilon / num_classes."""

    def __init__(self, epsilon: float = 0.1, reduction: str = "mean"):
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.epsilon = epsilon
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits, dim=-1)
        nll = -log_probs.gather(dim=-1, index=target.unsqueeze(-1)).squeeze(-1)
        uniform = -log_probs.mean(dim=-1)
        loss = (1.0 - self.epsilon) * nll + self.epsilon * uniform
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
