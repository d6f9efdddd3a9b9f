"""Evaluation of a trained network on any iterable of (images, labels) batches, and top-K prediction."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class Evaluation:
    """Metrics of one pass over a data set; per-image predictions in data order."""

    num_samples: int
    top1: float
    top5: float
    top_k: int                          # k of the `top5` figure: min(5, num_classes)
    loss: float | None
    confusion: torch.Tensor             # [C, C] counts, rows = true class, columns = predicted class
    labels: torch.Tensor                # [N] true classes 0..C-1
    top_indices: torch.Tensor           # [N, top_k] predicted classes, most probable first
    top_probabilities: torch.Tensor     # [N, top_k]

    @property
    def class_counts(self) -> torch.Tensor:
        return self.confusion.sum(dim=1)

    @property
    def per_class_accuracy(self) -> torch.Tensor:
        """Accuracy of each class (NaN for classes without images)."""
        counts = self.class_counts.double()
        return torch.where(counts > 0, self.confusion.diagonal().double() / counts.clamp(min=1),
                           torch.full_like(counts, float("nan")))

    def worst_classes(self) -> list[tuple[int, float, int]]:
        """(class index, accuracy, images) of classes with images, lowest accuracy first."""
        accuracy, counts = self.per_class_accuracy, self.class_counts
        present = [i for i in range(len(counts)) if counts[i] > 0]
        return sorted(((i, float(accuracy[i]), int(counts[i])) for i in present), key=lambda item: (item[1], item[0]))

    def confused_pairs(self, limit: int = 10) -> list[tuple[int, int, int]]:
        """(true class, predicted class, images) of the most frequent mistakes, most frequent first."""
        off_diagonal = self.confusion.clone()
        off_diagonal.fill_diagonal_(0)
        pairs = [(int(t), int(p), int(off_diagonal[t, p])) for t, p in off_diagonal.nonzero().tolist()]
        return sorted(pairs, key=lambda item: (-item[2], item[0], item[1]))[:limit]


def predict_top_k(network: nn.Module, images: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [B, k], class indices [B, k]) of a batch, most probable first; network in eval mode."""
    network.eval()
    with torch.no_grad():
        probabilities = torch.softmax(network(images).float(), dim=1)
    return probabilities.topk(min(k, probabilities.shape[1]), dim=1)


def evaluate_network(network: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                     loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     device: str | torch.device = "cpu") -> Evaluation:
    """Top-1 / top-5 accuracy, mean loss (weighted by batch size), confusion matrix and per-image top-5."""
    top_k = min(5, num_classes)
    device = torch.device(device)
    network = network.to(device).eval()
    loss_sum, count = 0.0, 0
    all_labels, all_indices, all_probabilities = [], [], []
    with torch.no_grad():
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            logits = network(images).float()
            if loss_function is not None:
                loss_sum += float(loss_function(logits, labels)) * len(labels)
            count += len(labels)
            probabilities, indices = torch.softmax(logits, dim=1).topk(top_k, dim=1)
            all_labels.append(labels.cpu())
            all_indices.append(indices.cpu())
            all_probabilities.append(probabilities.cpu())
    if count == 0:
        raise ValueError("no images to evaluate: the data set is empty")
    labels, indices = torch.cat(all_labels).long(), torch.cat(all_indices)
    confusion = torch.bincount(labels * num_classes + indices[:, 0], minlength=num_classes * num_classes)
    return Evaluation(
        num_samples=count, top1=float((indices[:, 0] == labels).double().mean()),
        top5=float((indices == labels[:, None]).any(dim=1).double().mean()), top_k=top_k,
        loss=loss_sum / count if loss_function is not None else None,
        confusion=confusion.view(num_classes, num_classes), labels=labels,
        top_indices=indices, top_probabilities=torch.cat(all_probabilities))


def class_label(class_names: Sequence[str], index: int) -> str:
    """'name' for a class index 0..N-1, or 'class <id>' (id = index + 1) when names are missing."""
    return class_names[index] if 0 <= index < len(class_names) else f"class {index + 1}"


def write_predictions_csv(evaluation: Evaluation, path: str | os.PathLike, class_names: Sequence[str],
                          image_names: Sequence[str] | None = None) -> None:
    """One row per image: file, true class (id 1..N and name), predicted class, probability, correct, top-K."""
    header = ["image_fname", "true_class", "true_class_name", "predicted_class", "predicted_class_name",
              "probability", "correct", f"top{evaluation.top_k}_classes", f"top{evaluation.top_k}_probabilities"]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(evaluation.num_samples):
            label = int(evaluation.labels[i])
            indices = evaluation.top_indices[i].tolist()
            probabilities = evaluation.top_probabilities[i].tolist()
            name = image_names[i] if image_names is not None and i < len(image_names) else str(i)
            writer.writerow([name, label + 1, class_label(class_names, label), indices[0] + 1,
                             class_label(class_names, indices[0]), f"{probabilities[0]:.6f}",
                             int(indices[0] == label), " ".join(str(j + 1) for j in indices),
                             " ".join(f"{p:.6f}" for p in probabilities)])
