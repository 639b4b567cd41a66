"""DataSources: the data one job was given, as one object passed through (the API, the
compress pipeline and its passes, optimize's builder, validation) instead of train / eval / calib
/ data_dir keyword lists repeated in every signature.

    DataSources(train="fashion-mnist:train", eval="fashion-mnist:test",
                calib="calibration/fashion-mnist-512.npz", eval_limit=300)

Sources are strings as the CLI takes them (a built-in name, a .npz, an image folder or CSV, IDX
files) or paths; `data_dir` is where built-in sets are looked for. `preprocessing` is the
preprocessing the data is read with once resolved (mean, std, resize, crop, channel_order), or
None for each model's own recorded one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

PREPROCESSING_KEYS = ("preset", "mean", "std", "resize", "crop", "channel_order")


def check_preprocessing_keys(value: Mapping[str, Any]) -> None:
    """A preprocessing mapping names only the keys the one rule reads (a ValueError for pydantic
    otherwise, naming the first unknown key and the known ones)."""
    unknown = [k for k in value if k not in PREPROCESSING_KEYS]
    if unknown:
        raise ValueError(f"unknown preprocessing key {unknown[0]!r} (keys: "
                         f"{', '.join(PREPROCESSING_KEYS)})")


class DataSources(BaseModel):
    """Where a job's data comes from: training, evaluation (with labels) and calibration
    sources, the folder holding built-in sets, how many eval samples to use, and the
    preprocessing the data is read with (None: each model's recorded one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    train: StrictStr | None = Field(None, description="training data (distillation, dwsep 'auto')")
    eval: StrictStr | None = Field(None, description="labelled eval data, e.g. fashion-mnist:test")
    calib: StrictStr | None = Field(None, description="int8 calibration data (default: a sample of "
                                                "train)")
    data_dir: StrictStr | None = Field(None, description="where built-in sets are found")
    eval_limit: int | None = Field(None, ge=1, description="a stratified sample of eval")
    preprocessing: dict[str, Any] | None = Field(
        None, description="the data's preprocessing as resolved (mean, std, resize, crop, "
                          "channel_order); None: each model's recorded one")

    @field_validator("train", "eval", "calib", "data_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("a source may not hold a NUL character")
        return value

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            check_preprocessing_keys(value)
            return {k: v for k, v in value.items() if v is not None} or None
        return value

    def resolved(self) -> DataSources:
        """The same sources, each a file shipped with edgekit when one of that name exists
        (e.g. calibration/fashion-mnist-512.npz from any working directory)."""
        from edgekit.resources import resolve_file

        found = {k: resolve_file(v) for k in ("train", "eval", "calib")
                 if (v := getattr(self, k))}
        return self.model_copy(update=found) if found else self

    def paths(self) -> dict[str, list[Path]]:
        """The files or folders each given source reads, by its flag (for refusing an output
        that would overwrite them)."""
        from edgekit.data.paths import source_paths

        return {f"--{k} data": source_paths(getattr(self, k), self.data_dir)
                for k in ("train", "eval", "calib") if getattr(self, k)}


def data_sources(value: Any, where: str = "data") -> DataSources:
    """DataSources from an instance, a mapping of its fields (checked: a typo names the key and
    the closest valid one) or None (nothing given); anything else is a ConfigError naming
    `where` and what it accepts."""
    from edgekit.config import group

    return group(where, value, DataSources, example="eval='fashion-mnist:test', ...")
