"""Small user architectures that edgekit must refuse with a clear message (issue 27, bad input):
built by `--arch tests.e2e.user_archs_bad:NAME` in tests/e2e/test_bad_user_models.py."""

from __future__ import annotations

from torch import nn


class TwoInputs(nn.Module):
    """forward(image, mask): a second input edgekit cannot feed."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, image, mask):
        x = self.conv(image * mask).mean((2, 3))
        return self.fc(x)


class Grey(nn.Module):
    """A one-channel model (a few convs, global pooling, any spatial size)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def two_inputs(num_classes: int = 4) -> TwoInputs:
    return TwoInputs(num_classes)


def grey(num_classes: int = 4) -> Grey:
    return Grey(num_classes)
