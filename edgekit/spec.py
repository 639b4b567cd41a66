"""InputSpec: what a model eats. It travels with the model (checkpoint, ONNX metadata, manifest)
so that every later stage preprocesses data the same way. Numpy only: runtimes use it on devices
that have no torch."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekit.errors import InputError

ONNX_METADATA_KEY = "edgekit.input_spec"


class InputSpec(BaseModel):
    """Input contract of an image classifier: one NCHW float tensor in, logits out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_name: str = "input"
    output_name: str = "logits"
    shape: tuple[int, int, int, int] = Field(
        (1, 1, 28, 28), description="N, C, H, W; N is the batch used for export and timing"
    )
    dynamic_batch: bool = True
    dtype: str = "float32"
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    class_names: tuple[str, ...] = ()

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if any(d <= 0 for d in shape):
            raise ValueError(f"every dimension of the input shape must be positive, got {shape}")
        from edgekit.limits import MAX_BATCH, MAX_INPUT_ELEMENTS, elements

        if elements(shape[1:]) > MAX_INPUT_ELEMENTS or shape[0] > MAX_BATCH:
            raise ValueError(f"input shape {shape} is absurdly large (limit {MAX_INPUT_ELEMENTS:,} "
                             f"values per sample, batch {MAX_BATCH})")
        return shape

    @model_validator(mode="after")
    def _channels_match(self) -> InputSpec:
        c = self.shape[1]
        if len(self.mean) not in (1, c) or len(self.std) not in (1, c):
            raise ValueError(f"mean/std need 1 or {c} values for {c} channels")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def with_shape(self, shape: Sequence[int]) -> InputSpec:
        """A copy with another input shape; mean/std are broadcast or reset to fit its channels."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4:
            raise InputError(
                f"input shape must have 4 dimensions N,C,H,W, got {','.join(map(str, shape))}",
                hint="pass e.g. --input-shape 1,3,224,224",
            )
        if any(d <= 0 for d in shape):
            raise InputError(f"input shape {','.join(map(str, shape))} has a dimension <= 0",
                             hint="pass e.g. --input-shape 1,3,224,224")
        from edgekit.limits import check_input_shape_size

        check_input_shape_size(shape)
        c = shape[1]
        mean, std = self.mean, self.std
        if len(mean) not in (1, c):
            mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
        return self.model_copy(update={"shape": shape, "mean": mean, "std": std})

    def batch_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, *self.shape[1:])

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N,H,W) or (N,H,W,C) in 0..255 → model-ready float32 NCHW.

        Resizes (bilinear) to the spec's H×W, converts grey↔RGB to the spec's channels, scales to
        0..1 and normalises with mean/std.
        """
        if images.dtype != np.uint8:
            raise InputError(f"preprocess expects uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise InputError(f"images must be N,H,W or N,H,W,C; got shape {images.shape}")
        n, h, w, c_in = images.shape
        if (h, w) != (self.height, self.width):
            images = _resize(images, self.height, self.width)
        x = images.astype(np.float32) / 255.0
        c = self.channels
        if c_in != c:
            if c_in == 1:
                x = np.repeat(x, c, axis=3)
            elif c == 1 and c_in in (3, 4):
                x = (x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            else:
                raise InputError(f"cannot convert {c_in}-channel images to {c} channels")
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        return cls.model_validate(json.loads(text))


def _resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((images.shape[0], height, width, images.shape[3]), np.uint8)
    for i, img in enumerate(images):
        mode_img = img[..., 0] if img.shape[2] == 1 else img
        resized = np.asarray(Image.fromarray(mode_img).resize((width, height), Image.BILINEAR))
        out[i] = resized.reshape(height, width, -1)
    return out


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' → (1, 3, 224, 224), with an error that says what was expected."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise InputError(
            f"cannot read input shape {text!r}", hint="use comma-separated integers, e.g. 1,3,224,224"
        ) from None
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise InputError(
            f"input shape {text!r} must be four positive integers N,C,H,W",
            hint="e.g. --input-shape 1,3,224,224",
        )
    from edgekit.limits import check_input_shape_size

    check_input_shape_size(shape)
    return shape


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
