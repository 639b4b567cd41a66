"""The seed's reference models, as nn.Modules.

Forward passes use plain tensor ops (conv, pool, permute, flatten, RNN, linear) with no
data-dependent Python, so every model exports to ONNX with a dynamic batch dimension.
Module names are stable (`conv1`, `features`, `rnn`, `classifier`, ...): later passes (pruning,
depthwise substitution, quantization) address layers by these names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# How a feature map (B, C, H, W) becomes an RNN sequence in RowRNN and the hybrids:
# `x.permute(0, 2, 1, 3).flatten(2)` -> (B, H, C*W): one step per row, and step features ordered
# channel-major, so channel c owns the RNN input columns [c*W, (c+1)*W). A pass that removes
# channel c of the last conv removes exactly those columns of the RNN's weight_ih.
SEQUENCE_LAYOUT = "B,C,H,W -> permute(0,2,1,3).flatten(2) -> B,H,(C*W); channel c -> columns c*W:(c+1)*W"


def rows_as_sequence(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, C*W): each image row is one time step (see SEQUENCE_LAYOUT)."""
    return x.permute(0, 2, 1, 3).flatten(2)


class LeNet5(nn.Module):
    """The article's SimpleCNN (LeNet-5 style), for 1×28×28 inputs.

    conv1 1→16 5×5 (28→24), max-pool 2 (→12), conv2 16→32 5×5 (→8), max-pool 2 (→4),
    fc1 32·4·4=512→120, fc2 120→84, fc3 84→classes; ReLU after every layer but the last.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, conv1_channels: int = 16,
                 conv2_channels: int = 32, fc1_features: int = 120, fc2_features: int = 84,
                 image_size: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1_channels, kernel_size=5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, kernel_size=5)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(conv2_channels * side * side, fc1_features)
        self.fc2 = nn.Linear(fc1_features, fc2_features)
        self.fc3 = nn.Linear(fc2_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class RowRNN(nn.Module):
    """An LSTM that reads the image row by row (28 steps of 28 pixels for Fashion-MNIST); the
    output at the last step feeds a linear classifier."""

    sequence_layout = SEQUENCE_LAYOUT

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 hidden_size: int = 128, num_layers: int = 1) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_channels * image_size, hidden_size, num_layers=num_layers,
                           batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(rows_as_sequence(x))
        return self.classifier(out[:, -1])


def conv_stem(in_channels: int, c1: int, c2: int) -> nn.Sequential:
    """The hybrids' feature extractor: conv 3×3 pad 1 → BN → ReLU → max-pool 2, twice (28→7)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
        nn.BatchNorm2d(c1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False),
        nn.BatchNorm2d(c2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
    )


class _ConvRNN(nn.Module):
    """Conv stack with BatchNorm whose feature map is read as a sequence of rows by an RNN.

    features: conv 3×3 pad 1 → BN → ReLU → max-pool 2, twice (28→14→7); the (B, C, 7, 7) map
    becomes 7 steps of C·7 features (see SEQUENCE_LAYOUT); rnn: GRU/LSTM; classifier: linear
    on the last step's output.
    """

    rnn_type: type[nn.RNNBase] = nn.GRU
    sequence_layout = SEQUENCE_LAYOUT

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 channels: tuple[int, int] | list[int] = (16, 32), hidden_size: int = 128,
                 image_size: int = 28) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.features = conv_stem(in_channels, c1, c2)
        side = image_size // 4
        self.rnn = self.rnn_type(c2 * side, hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(rows_as_sequence(self.features(x)))
        return self.classifier(out[:, -1])


class CNNGRU(_ConvRNN):
    """Hybrid: BatchNorm conv stack whose feature-map rows are read by a GRU."""

    rnn_type = nn.GRU


class CNNLSTM(_ConvRNN):
    """Hybrid: BatchNorm conv stack whose feature-map rows are read by an LSTM."""

    rnn_type = nn.LSTM
