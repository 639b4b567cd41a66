"""Size limits checked before anything is allocated from a file's declared shapes: a checkpoint,
an ONNX model or a data file that declares more than this is refused (exit 2) instead of
exhausting memory. Set EDGEKIT_MAX_MODEL_ELEMENTS / EDGEKIT_MAX_INPUT_ELEMENTS to raise them."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from edgekit.errors import InputError, ModelLoadError

# 1e9 float32 values (4 GB): above torchvision's largest classifier (ViT-H/14, 632 M).
MAX_MODEL_ELEMENTS = int(os.environ.get("EDGEKIT_MAX_MODEL_ELEMENTS", 1_000_000_000))
# One input sample C×H×W: 3×8192×8192 fits, 1×100000×100000 does not.
MAX_INPUT_ELEMENTS = int(os.environ.get("EDGEKIT_MAX_INPUT_ELEMENTS", 1 << 28))
MAX_BATCH = 65536
# The shorter side an image may be resized to before its centre crop: a square image that size
# holds MAX_INPUT_ELEMENTS pixels (16384 by default), so one resize never allocates more than
# the largest sample would.
MAX_RESIZE = math.isqrt(MAX_INPUT_ELEMENTS)

# Threads a runtime or the trainer is given (--threads, a profile's threads:): far above any
# machine's cores; ONNX Runtime raises a TypeError past 2**31.
MAX_THREADS = 4096
# One array of a data file (.npz): 8 GiB.
MAX_DATA_BYTES = int(os.environ.get("EDGEKIT_MAX_DATA_BYTES", 8 << 30))


def elements(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


def check_model_elements(count: int, what: str) -> None:
    if count > MAX_MODEL_ELEMENTS:
        raise ModelLoadError(
            f"{what} declares {count:,} parameter values, over edgekit's limit of "
            f"{MAX_MODEL_ELEMENTS:,}",
            hint="the file is damaged or hostile; if the model really is this large, raise "
            "EDGEKIT_MAX_MODEL_ELEMENTS")


def check_input_shape_size(shape: tuple[int, ...], what: str = "input shape") -> None:
    """A sample (all dims but the batch) and the batch must stay under the limits."""
    sample = elements(shape[1:])
    if sample > MAX_INPUT_ELEMENTS or (shape and shape[0] > MAX_BATCH):
        raise InputError(
            f"{what} {','.join(map(str, shape))} is absurdly large ({sample:,} values per sample, "
            f"limit {MAX_INPUT_ELEMENTS:,}; batch limit {MAX_BATCH})",
            hint="check the shape; raise EDGEKIT_MAX_INPUT_ELEMENTS if it is real")


def check_threads(threads: object, what: str = "threads") -> None:
    """A thread count must be a whole number in 1..MAX_THREADS (None: the runtime's choice)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) \
            or not 1 <= threads <= MAX_THREADS:
        raise InputError(f"{what} {threads!r} is not a thread count (1 to {MAX_THREADS})",
                         hint="pass --threads N with N up to the machine's cores, or fix "
                         "threads: in the device profile")
