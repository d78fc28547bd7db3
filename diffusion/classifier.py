"""A small MNIST CNN whose only job is to score generated digits ("is this sample the digit
that was asked for?"). It is trained on its own seed, apart from every diffusion model, so it
is an independent judge rather than a reflection of one model's habits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def Classifier(num_classes: int = 10) -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(block(1, 32), block(32, 64), nn.Flatten(),  # 64 x 7 x 7
                          nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))
    # A Sequential is kept (slicing it gives the feature extractor), so it says how to rebuild it.
    model.factory, model.config = f"{__name__}.Classifier", {"num_classes": num_classes}
    return model


def cross_entropy_loss(model, x, labels, generator=None):
    return F.cross_entropy(model(x).float(), labels)


@torch.no_grad()
def embed(classifier, images, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, penultimate-layer features (N, 128)) of images in [0, 1].

    Images are clamped to [0, 1], the range the classifier was trained on, because raw DDPM
    samples overshoot it slightly. The features are what the Fréchet distance compares.
    """
    classifier.eval()
    device = next(classifier.parameters()).device
    body, head = classifier[:-1], classifier[-1]
    labels, features = [], []
    for i in range(0, images.shape[0], batch_size):
        f = body(images[i:i + batch_size].to(device).float().clamp(0, 1))
        labels.append(head(f).argmax(1).cpu())
        features.append(f.cpu())
    return torch.cat(labels), torch.cat(features)


def predict(classifier, images, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of images in [0, 1]."""
    return embed(classifier, images, batch_size)[0]


def accuracy(classifier, images, labels) -> float:
    """Fraction of images classified as their label."""
    labels = torch.as_tensor(labels)
    return (predict(classifier, images).cpu() == labels.cpu()).float().mean().item()
