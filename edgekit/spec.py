"""InputSpec: what a model eats. It travels with the model (checkpoint, ONNX metadata, manifest)
so that every later stage preprocesses data the same way. Numpy only: runtimes use it on devices
that have no torch."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekit.errors import InputError

ONNX_METADATA_KEY = "edgekit.input_spec"

# Normalisation bounds. Inputs are in 0..1, so a mean beyond ±MAX_ABS_MEAN or a std outside
# [MIN_STD, MAX_STD] is a mistake, never a model's contract; within them (x - mean) / std stays
# finite in float32 (a std of 1e-45 made every input inf).
MAX_ABS_MEAN = 1e4
MIN_STD, MAX_STD = 1e-6, 1e4


def normalisation_problem(name: str, values: Sequence[float]) -> str | None:
    """Why `values` cannot be a `name` ("mean" or "std") of InputSpec, or None when they can:
    every value finite, a mean within ±MAX_ABS_MEAN, a std within [MIN_STD, MAX_STD]. The one
    check behind the --mean/--std flags, recipes' input keys and recorded specs."""
    for value in values:
        if not math.isfinite(value):
            return f"{value} is not a finite number"
        if name == "std" and not MIN_STD <= value <= MAX_STD:
            return (f"{value:g} is outside [{MIN_STD:g}, {MAX_STD:g}]" if value > 0
                    else f"{value:g} is not positive")
        if name == "mean" and abs(value) > MAX_ABS_MEAN:
            return f"{value:g} is outside [{-MAX_ABS_MEAN:g}, {MAX_ABS_MEAN:g}] (inputs are 0..1)"
    return None


def channels_problem(name: str, values: Sequence[float], channels: int) -> str | None:
    """Why `values` cannot be the `name` (mean/std) of a model with `channels` input channels, or
    None: one value (every channel) or one per channel. The one check behind --mean/--std,
    presets, recipes' input keys and recorded specs."""
    if len(values) in (1, channels):
        return None
    shown = ",".join(f"{v:g}" for v in values)
    return (f"{name} has {len(values)} values; the model has {channels} input "
            f"channel{'s' if channels > 1 else ''} ({shown} is a {len(values)}-channel "
            f"{name})")


def channels_hint(channels: int) -> str:
    """What to pass instead, for a model with `channels` input channels."""
    example = ("--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" if channels == 3 else
               "--mean " + ",".join(["0.5"] * channels) + " --std " + ",".join(["0.5"] * channels))
    count = "1 value" if channels == 1 else f"1 or {channels} values"
    return (f"give {count} each, the ones the model was trained with, e.g. "
            f"{example}; if the model takes another channel count, say so with --input-shape "
            "N,C,H,W")


def channel_change_problem(recorded: InputSpec | None, channels: int,
                           given: dict | None = None) -> str | None:
    """Why a spec with per-channel mean/std for `recorded.channels` channels cannot simply be
    reshaped to `channels` (InputSpec.with_shape would average them: ImageNet's RGB values
    silently turned into one grey value), or None when nothing is lost: the channel count is
    unchanged, the values are one for every channel, or the user `given` new ones."""
    if recorded is None or recorded.channels == channels:
        return None
    given = {k: v for k, v in (given or {}).items() if v is not None}
    lost = [n for n in ("mean", "std") if len(getattr(recorded, n)) > 1 and n not in given]
    if not lost:
        return None
    shown = "; ".join(f"{n} {','.join(f'{v:g}' for v in getattr(recorded, n))}" for n in lost)
    return (f"its normalisation is for {recorded.channels} channels ({shown}) but the input "
            f"shape asks for {channels} channel{'s' if channels > 1 else ''}")


def resize_problem(resize: int) -> str | None:
    """Why `resize` cannot be a shorter side to resize to (over edgekit.limits.MAX_RESIZE)."""
    from edgekit.limits import MAX_RESIZE

    if resize > MAX_RESIZE:
        return f"{resize} is over edgekit's limit of {MAX_RESIZE} pixels"
    return None


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
    # Preprocessing that belongs to the model (edgekit.spec.InputSpec.prepare_image does it):
    # resize the shorter side to `resize` then centre-crop to H×W; without `resize`, resize to
    # H×W directly. `channel_order` is the order the model's 3 channels expect.
    resize: int | None = Field(None, gt=0, description="shorter side before the centre crop")
    channel_order: Literal["RGB", "BGR"] = "RGB"

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
        for name in ("mean", "std"):
            if problem := channels_problem(name, getattr(self, name), c):
                raise ValueError(problem)
        if self.resize is not None and self.resize < min(self.shape[2], self.shape[3]):
            raise ValueError(f"resize {self.resize} is smaller than the {self.shape[2]}x"
                             f"{self.shape[3]} centre crop")
        if self.resize is not None and (problem := resize_problem(self.resize)):
            raise ValueError(f"resize {problem}")
        for name in ("mean", "std"):
            if problem := normalisation_problem(name, getattr(self, name)):
                raise ValueError(f"{name} {problem}")
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
        resize = self.resize  # keeps the crop's share of the image at the new size
        if resize is not None:
            resize = max(shape[2], shape[3], round(resize * shape[2] / self.height))
        return self.model_copy(update={"shape": shape, "mean": mean, "std": std, "resize": resize})

    def with_preprocessing(self, *, mean: Sequence[float] | None = None,
                           std: Sequence[float] | None = None, resize: int | None = None,
                           crop: int | None = None, channel_order: str | None = None) -> InputSpec:
        """A copy with the user's preprocessing (--mean/--std/--resize/--crop, recipe keys);
        `crop` sets the model's input H and W. Wrong channel counts are an error naming the flags."""
        update: dict = {}
        c = self.channels
        for name, values in (("mean", mean), ("std", std)):
            if values is None:
                continue
            values = tuple(float(v) for v in values)
            if problem := channels_problem(name, values, c):
                raise InputError(f"--{problem}", hint=channels_hint(c))
            if problem := normalisation_problem(name, values):
                raise InputError(f"--{name} {','.join(f'{v:g}' for v in values)}: {problem}",
                                 hint=f"e.g. --{name} " + ("0.485,0.456,0.406" if name == "mean"
                                                           else "0.229,0.224,0.225"))
            update[name] = values
        spec = self
        if crop is not None:
            spec = spec.with_shape((self.shape[0], c, crop, crop))
            update.setdefault("resize", spec.resize)
        if resize is not None:
            if problem := resize_problem(resize):
                raise InputError(f"--resize {problem}",
                                 hint="resize the shorter side to a little over the crop, e.g. "
                                 f"--resize {round(spec.height / 0.875)} --crop {spec.height}")
            if resize < min(spec.height, spec.width):
                raise InputError(f"--resize {resize} is smaller than the {spec.height}x{spec.width} crop",
                                 hint="resize the shorter side to at least the crop, e.g. --resize "
                                 f"{round(spec.height / 0.875)} --crop {spec.height}")
            update["resize"] = resize
        if channel_order is not None:
            if channel_order.upper() not in ("RGB", "BGR"):
                raise InputError(f"channel order {channel_order!r} is not RGB or BGR", hint="use RGB or BGR")
            update["channel_order"] = channel_order.upper()
        return spec.model_copy(update=update) if update else spec

    def preprocessing_conflicts(self, **given: object) -> list[str]:
        """Which of the given --mean/--std/--resize/--crop/--channel-order values differ from this
        spec's own, one line each ([] when all agree). Values are checked as with_preprocessing
        checks them (channel counts, positive std): mean/std of one value stand for every
        channel; crop is the input's H and W."""
        given = {k: v for k, v in given.items() if v is not None}
        self.with_preprocessing(**given)  # type: ignore[arg-type]  # InputError for bad values
        c = self.channels

        def per_channel(values: Sequence[float]) -> np.ndarray:
            return np.broadcast_to(np.asarray(values, np.float64), (c,))

        def text(values: Sequence[float]) -> str:
            return ",".join(f"{v:g}" for v in values)

        conflicts = []
        for name in ("mean", "std"):
            if name in given and not np.allclose(per_channel(given[name]),  # type: ignore[arg-type]
                                                 per_channel(getattr(self, name)), rtol=0, atol=1e-6):
                conflicts.append(f"--{name} {text(given[name])} differs from its "  # type: ignore[arg-type]
                                 f"{text(getattr(self, name))}")
        if "crop" in given and (given["crop"], given["crop"]) != (self.height, self.width):
            conflicts.append(f"--crop {given['crop']} differs from its {self.height}x{self.width} "
                             "input")
        if "resize" in given and given["resize"] != self.resize:
            conflicts.append(f"--resize {given['resize']} differs from its "
                             + (f"{self.resize}" if self.resize else
                                f"none (images are scaled to {self.height}x{self.width})"))
        if "channel_order" in given and str(given["channel_order"]).upper() != self.channel_order:
            conflicts.append(f"--channel-order {given['channel_order']} differs from its "
                             f"{self.channel_order}")
        return conflicts

    def batch_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, *self.shape[1:])

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """One uint8 image H,W,C (or H,W) → uint8 H×W×C at the model's size and channel count:
        the single place geometry and channels are decided, for every source and every runtime.

        With `resize`, the shorter side is scaled to it (bilinear) and the centre H×W cropped;
        without, the image is scaled to H×W. Grey becomes RGB by repetition, RGB becomes grey by
        ITU-R 601 luma; `channel_order` BGR reverses the three channels.
        """
        from PIL import Image

        if image.ndim == 2:
            image = image[..., None]
        h, w, c_in = image.shape
        pil = Image.fromarray(image[..., 0] if c_in == 1 else image[..., :3])
        if self.resize is not None:
            scale = self.resize / min(h, w)
            nh, nw = max(self.height, round(h * scale)), max(self.width, round(w * scale))
            if (nh, nw) != (h, w):
                pil = pil.resize((nw, nh), Image.BILINEAR)
            top, left = (nh - self.height) // 2, (nw - self.width) // 2
            pil = pil.crop((left, top, left + self.width, top + self.height))
        elif (h, w) != (self.height, self.width):
            pil = pil.resize((self.width, self.height), Image.BILINEAR)
        return self._to_channels(np.asarray(pil).reshape(self.height, self.width, -1))

    def _to_channels(self, image: np.ndarray) -> np.ndarray:
        """H,W,C or N,H,W,C uint8 → the model's channel count and order."""
        c_in, c = image.shape[-1], self.channels
        if c_in != c:
            if c_in == 1:
                image = np.repeat(image, c, axis=-1)
            elif c == 1 and c_in in (3, 4):
                luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                image = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
            else:
                raise InputError(f"cannot convert {c_in}-channel images to {c} channels")
        if c == 3 and self.channel_order == "BGR":
            image = image[..., ::-1]
        return image

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 N,H,W,C already at the model's size → float32 NCHW scaled to 0..1 and normalised."""
        x = np.ascontiguousarray(images.astype(np.float32).transpose(0, 3, 1, 2)) / 255.0
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N,H,W) or (N,H,W,C) in 0..255 → model-ready float32 NCHW, each through
        `prepare_image` (size, crop, channels) then `normalise` (mean/std)."""
        if images.dtype != np.uint8:
            raise InputError(f"preprocess expects uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise InputError(f"images must be N,H,W or N,H,W,C; got shape {images.shape}")
        if images.shape[3] not in (1, 3, 4):
            raise InputError(f"cannot convert {images.shape[3]}-channel images to {self.channels} channels")
        if images.shape[1:3] == (self.height, self.width) and self.resize is None:
            prepared = self._to_channels(images)  # works on N,H,W,C as on H,W,C
        else:
            prepared = np.empty((len(images), self.height, self.width, self.channels), np.uint8)
            for i, im in enumerate(images):
                prepared[i] = self.prepare_image(im)
        return self.normalise(prepared)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        return cls.model_validate(json.loads(text))


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
