"""What the hand-written architectures share: the classifier interface (timm's shape) and weight initialisation."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierNetwork(nn.Module):
    """forward_features (feature maps), forward_head (pool, dropout, classifier) and reset_classifier.

    Subclasses define forward_features and set `pool`, `dropout` and `classifier` (an nn.Linear), or override
    forward_head as well.
    """

    pool: nn.Module
    dropout: nn.Module
    classifier: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature maps -> class logits (or, with pre_logits, the vector the classifier reads)."""
        x = self.dropout(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for `num_classes` classes; the rest keeps its weights."""
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device)


def init_conv_weights(network: nn.Module) -> None:
    """Kaiming-normal convolution weights (fan_out, ReLU gain) and zero convolution biases."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
