"""What data a model needs, said by its input (for hints in error messages)."""

from __future__ import annotations

from typing import Any


def calibration_hint(spec: Any) -> str:
    """What calibration data this model needs, by its input's shape and channels: its own
    training images, never the built-in grey 28×28 set for a model that takes something else."""
    shape = tuple(spec.shape[1:])
    channels = shape[0] if len(shape) == 3 else None
    what = (f"{'RGB' if channels == 3 else 'grey' if channels == 1 else f'{channels}-channel'} "
            f"images, {shape[1]}×{shape[2]} after preprocessing" if channels
            else f"inputs of shape {'×'.join(map(str, shape))}")
    return (f"pass --calib DATA with {what} (input {'×'.join(map(str, shape))}), like the "
            "model's own: its training image folder, or a set built from it with `edgekit calib build SOURCE -n 512 -o SET.npz`")
