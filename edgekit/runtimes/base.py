"""Runner base class (as Polygraphy's BaseRunner: public `infer()` wraps `infer_impl()`).

The base class owns input checks, the timing loop and its statistics, so that every runtime is
measured the same way. Subclasses only load the artifact and run one batch. Inputs given to the
timing loop are real images, preallocated once; `bind(x)` lets a runtime stage them (e.g. on the
GPU) before timing starts, so that what is timed is stated, not implied.

A runner has a lifecycle (Polygraphy's activate/deactivate): it loads in `__init__` and frees what
it loaded (a session, a compiled model, GPU buffers) in `close()`; it is a context manager, so
`with open_runner(...) as runner:` closes it whatever happens. `open_runners()` counts the runners
loaded in this process and not closed yet (left to the garbage collector, they count on).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit import kinds
from edgekit.config import parse_as
from edgekit.errors import InputError, MissingDependencyError
from edgekit.registry import load_modules, suggest
from edgekit.runtimes.latency import LatencyProtocol, latency_stats
from edgekit.runtimes.records import LatencyStats, LayerRow, MachineSummary, RuntimeDetails
from edgekit.spec import InputSpec


class RunnerOptions(BaseModel):
    """A runner's options, as a device profile gives them (`runtimes.<name>.options`, plus the
    profile's providers and performance hint). Each runner extends it; unknown keys are errors
    with the closest valid key, checked when the profile is loaded."""

    model_config = ConfigDict(extra="forbid")

    performance_hint: Literal["latency", "throughput"] | None = Field(
        None, description="the profile's performance hint (OpenVINO uses it)")
    # (issue 17) For benchmarks only: every inference also sleeps this long, inside the timed
    # span, so that a profile simulates a device of a known, fixed speed (benchmarks/bench_fleet.py
    # runs 32 of them). The recorded latency includes it; never set it on a real device.
    simulated_delay_ms: float | None = Field(
        None, ge=0, description="benchmark only: a fixed sleep added to every inference")


# Filled by subclassing; get_runner imports the package's modules (each imports its library
# lazily). The formats a runner reads come from edgekit/kinds.py.
RUNNERS: dict[str, type[Runner]] = {}


@dataclass(frozen=True)
class DeviceBuild:
    """How a runtime whose files are not portable (its kind in kinds.py: `portable=False`, e.g.
    TensorRT engines) has them built on the device that runs them, which `edgekit optimize` reads
    when it sends a candidate there as the folder to build from (edgekit/optimize/measure.py)."""

    title: str  # the runtime in sentences ("TensorRT")
    product: str = "engine"  # what one build makes
    # runtimes that also time the folder's fp32 model there, on the way (when the device has them)
    companions: tuple[str, ...] = ()
    needs: str = ""  # what the device needs to build: the hint of a failed build
    # words of a device report's missing items that explain a failed build (besides the name)
    report_words: tuple[str, ...] = ()
    unusable: str = "not installed"  # why it is not usable there when the report does not say


class Runner:
    """Load an artifact once, then `infer()` batches and `measure_latency()` with the protocol."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str] = ""  # the import name of the library
    install_hint: ClassVar[str] = ""
    timing_scope: ClassVar[str] = "inference call on host, inputs preallocated in host memory"
    Options: ClassVar[type[RunnerOptions]] = RunnerOptions
    # What the rest of edgekit reads from the class (nothing else spells a runtime's name):
    dists: ClassVar[tuple[str, ...]] = ()  # distributions whose versions a record lists
    short: ClassVar[str] = ""  # its name in the report's plots (default: the name)
    colour: ClassVar[str] = "#7f7f7f"  # its colour there
    reads_onnx: ClassVar[bool | None] = None  # runs an fp32 .onnx as is (None: from formats)
    device_build: ClassVar[DeviceBuild | None] = None  # see DeviceBuild (files not portable)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            if "formats" not in cls.__dict__:  # from the table, unless the class says
                cls.formats = kinds.formats_read_by(cls.name)
            elif cls.name not in kinds.RUNTIMES:  # a runtime of a kind the table has: one file
                kinds.add_reader(cls.name, cls.formats)
            if cls.reads_onnx is None:
                cls.reads_onnx = "onnx" in cls.formats
            cls.short = cls.__dict__.get("short") or cls.name
            RUNNERS[cls.name] = cls

    @classmethod
    def builds_on_device(cls) -> bool:
        """Whether what it runs is built on the device that runs it (kinds.py: not portable)."""
        return any(kind is not None and not kind.portable
                   for kind in map(kinds.by_format, cls.formats))

    @classmethod
    def how_built_on_device(cls) -> DeviceBuild:
        """Its DeviceBuild, or a plain one (its name, no companions) when it declares none."""
        return cls.device_build or DeviceBuild(title=cls.name)

    def __init__(self, artifact: str | Path, spec: InputSpec, *, threads: int | None = None,
                 options: RunnerOptions | dict[str, Any] | None = None) -> None:
        from edgekit.limits import check_threads

        check_threads(threads)  # before a runtime is handed 10**11 threads (a TypeError there)
        self.artifact = Path(artifact)
        self.spec = spec
        self.threads = threads
        self.options = self.parse_options(options)
        self.closed = True  # until it has loaded (close() on a failed load frees nothing twice)
        self.check_available()
        try:
            self.load()
        except BaseException:
            self.free()  # what the failed load had already taken
            raise
        self.closed = False
        _count_open(+1)

    # ----------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Free what `load()` took (`free()`); idempotent. The runner cannot infer after."""
        if self.closed:
            return
        self.closed = True
        _count_open(-1)
        self.free()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- to implement
    def load(self) -> None:
        raise NotImplementedError

    def free(self) -> None:
        """Drop what `load()` took (sessions, compiled models, device buffers). Called once by
        `close()`, or after a failed `load()` (so it copes with what is missing)."""

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        """A zero-argument callable that runs one inference on `x`, staged once up front."""
        return lambda: self.infer_impl(x)

    def describe(self) -> RuntimeDetails:
        """What actually ran: library version, providers/device, threads."""
        return {"runtime": self.name, "threads": self.threads}

    # ----------------------------------------------------------- timing hooks
    def after_sample(self, timed: bool) -> None:
        """Called after every run of the bound callable (warm-up and timed), outside the timed
        span. GPU runners read their CUDA-event time of the run just finished here, so that
        reading it costs the host timing nothing."""

    def extra_stats(self, batch: int, duration_s: float,
                    protocol: LatencyProtocol) -> LatencyStats:
        """Statistics besides the host timing, merged into measure_latency's result (e.g.
        `device_latency`: CUDA-event time of the inference alone). Called once per run."""
        return {}

    def nvidia_gpu(self) -> int | None:
        """The CUDA index of the NVIDIA GPU this runner runs on (the sampler reads its clocks,
        throttle reasons and energy through NVML), None when it runs on the CPU."""
        return None

    # ----------------------------------------------------------- shared
    @classmethod
    def parse_options(cls, options: RunnerOptions | dict[str, Any] | None,
                      where: str | None = None) -> Any:
        """The options as this runner's typed config (ConfigError naming an unknown key)."""
        if isinstance(options, cls.Options):
            return options
        if isinstance(options, RunnerOptions):
            options = options.model_dump(exclude_unset=True)
        return parse_as(cls.Options, dict(options or {}), where or f"runtime {cls.name} options")

    @classmethod
    def computes_alike(cls, a: RunnerOptions | None, b: RunnerOptions | None) -> bool:
        """Whether this runtime computes the same outputs under options `a` and `b` (two device
        profiles' `runner_options`, parsed): one file's logits are then reused, not predicted
        again. Equal once normalised."""
        return cls.normalised(cls.parse_options(a)) == cls.normalised(cls.parse_options(b))

    @classmethod
    def normalised(cls, options: RunnerOptions) -> RunnerOptions:
        """The parsed options in one spelling (a runner with aliases overrides it)."""
        return options

    @classmethod
    def profile_layers(cls, path: Path, spec: InputSpec, x: np.ndarray, *, threads: int | None,
                       options: dict[str, Any], runs: int, warmup: int,
                       on_run: Callable[[], None]) -> list[LayerRow]:
        """Per-layer time from the runtime's own profiler (`edgekit profile`): one row per
        layer run, {layer, op, precision, ms} with ms summed over `runs` after `warmup`. A
        runtime without one leaves this out (`has_layer_profiler`)."""
        raise NotImplementedError

    @classmethod
    def has_layer_profiler(cls) -> bool:
        return cls.profile_layers.__func__ is not Runner.profile_layers.__func__

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if cls.package and importlib.util.find_spec(cls.package) is None:
            return False, f"{cls.package} is not installed ({cls.install_hint})"
        return True, ""

    @classmethod
    def usable_with(cls, options: RunnerOptions | dict[str, Any] | None) -> tuple[bool, str]:
        """Whether this runtime can run here as a profile configures it, and why not (a
        runner whose options name hardware, as ONNX Runtime's providers do, checks them)."""
        return cls.available()

    @classmethod
    def check_available(cls) -> None:
        ok, reason = cls.available()
        if not ok:
            raise MissingDependencyError(f"runtime {cls.name} is not usable here: {reason}",
                                         hint=cls.install_hint or None)

    def check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise InputError(f"{self.name} runner expects a numpy array, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(self.spec.shape[1:]):
            raise InputError(f"input shape {tuple(x.shape)} does not match the model's "
                             f"(N, {', '.join(map(str, self.spec.shape[1:]))})")
        if not self.spec.dynamic_batch and x.shape[0] != self.spec.shape[0]:
            raise InputError(f"this artifact has a fixed batch of {self.spec.shape[0]}, got {x.shape[0]}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.closed:
            raise InputError(f"the {self.name} runner of {self.artifact.name} is closed",
                             hint="open the artifact again (a runner frees its model on close)")
        out = self.infer_impl(self.check_input(x))
        self._simulated_delay()
        return np.asarray(out, dtype=np.float32)

    def _simulated_delay(self) -> None:
        delay = getattr(self.options, "simulated_delay_ms", None)
        if delay:
            time.sleep(delay / 1000.0)

    def predict(self, x: np.ndarray, batch_size: int = 64,
                on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits for all of x, batch by batch (the last batch may be smaller)."""
        if not self.spec.dynamic_batch:
            batch_size = self.spec.shape[0]
        outs = []
        for i in range(0, len(x), batch_size):
            chunk = x[i : i + batch_size]
            if not self.spec.dynamic_batch and len(chunk) < batch_size:
                pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), np.float32)
                outs.append(self.infer(np.concatenate([chunk, pad]))[: len(chunk)])
            else:
                outs.append(self.infer(chunk))
            if on_batch:
                on_batch(len(chunk))
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    def measure_latency(self, x: np.ndarray, protocol: LatencyProtocol | None = None,
                        on_sample: Callable[[float], None] | None = None) -> LatencyStats:
        """Run the protocol on the batch `x` and return the statistics (every sample kept)."""
        protocol = protocol or LatencyProtocol()
        run = self.bind(self.check_input(x))
        sampler = self._sampler(protocol)
        if getattr(self.options, "simulated_delay_ms", None):
            bound = run

            def run() -> Any:
                out = bound()
                self._simulated_delay()
                return out
        start = time.perf_counter()
        warm = 0
        try:  # the sampler is finished (tegrastats stopped, NVML closed) whatever happens
            while (warm < protocol.warmup_count
                   or time.perf_counter() - start < protocol.warmup_seconds) \
                    and time.perf_counter() - start < protocol.max_seconds:
                run()
                self.after_sample(timed=False)
                warm += 1
            samples: list[float] = []
            if sampler is not None:
                sampler.begin()
            t0 = time.perf_counter()
            deadline = t0 + protocol.max_seconds
            clock = time.perf_counter_ns
            while True:
                begin = clock()
                run()
                samples.append((clock() - begin) / 1e6)
                self.after_sample(timed=True)
                now = time.perf_counter()
                if on_sample:
                    on_sample(samples[-1])
                if (len(samples) >= protocol.min_queries and now - t0 >= protocol.min_seconds) \
                        or now >= deadline:
                    break
            duration = time.perf_counter() - t0
        finally:
            machine = sampler.finish() if sampler is not None else None
        stopped_by = "minimums met" if len(samples) >= protocol.min_queries and \
            now - t0 >= protocol.min_seconds else "max_seconds"
        stats = latency_stats(np.array(samples), len(x), duration_s=duration, protocol=protocol)
        stats.update(warmup_queries=warm, warmup_s=round(t0 - start, 4), stopped_by=stopped_by,
                     timing_scope=self.timing_scope, protocol=protocol.model_dump(),
                     samples_ms=[round(s, 5) for s in samples])
        stats.update(self.extra_stats(len(x), duration, protocol))  # e.g. device_latency
        stats.update(_machine_verdict(machine, protocol, len(samples), len(x)))
        return stats

    def _sampler(self, protocol: LatencyProtocol) -> Any:
        """The machine sampler for one window (opened now, before warm-up), or None when the
        protocol turns sampling off. Never raises: a sampler that cannot start is recorded."""
        if not protocol.interference.sample:
            return None
        from edgekit.runtimes.sampler import MachineSampler

        try:
            return MachineSampler(interval_s=protocol.interference.sample_interval_s,
                                  gpu_index=self.nvidia_gpu()).open()
        except Exception as exc:  # the measurement stands without it
            return _FailedSampler(f"{type(exc).__name__}: {exc}")


_OPEN = [0]
_OPEN_LOCK = threading.Lock()


def _count_open(delta: int) -> None:
    with _OPEN_LOCK:
        _OPEN[0] += delta


def open_runners() -> int:
    """How many runners this process loaded and has not closed (tests check it is zero after a
    validation or an optimize run: nothing is left to the garbage collector)."""
    return _OPEN[0]


class _FailedSampler:
    """Stands in for a sampler that could not start: the record says so."""

    def __init__(self, error: str) -> None:
        self.error = error

    def begin(self) -> None:
        pass

    def finish(self) -> MachineSummary:
        return {"errors": [f"sampler could not start: {self.error}"], "failed": ["sampler"],
                "not_sampled": ["everything (the sampler could not start)"]}


def _machine_verdict(machine: MachineSummary | None, protocol: LatencyProtocol, queries: int,
                     batch: int) -> LatencyStats:
    """The record's `machine` summary, `disturbed` verdict with its reasons, and `energy`."""
    from edgekit.runtimes.interference import energy_per_inference, judge

    if machine is None:
        return {"disturbed": None, "disturbed_reasons": ["not sampled (interference.sample is "
                                                         "false)"],
                "energy": {"source": None, "note": "no power source (not sampled)"}}
    disturbed, reasons = judge(machine, protocol.interference)
    if disturbed is None and not reasons:
        reasons = ["not judged: " + ("; ".join(machine.get("errors") or [])
                                     or "nothing readable (" + "; ".join(
                                         machine.get("not_sampled") or []) + ")")]
    return {"machine": machine, "disturbed": disturbed, "disturbed_reasons": reasons,
            "energy": energy_per_inference(machine, queries, batch)}


class DeviceTimed:
    """Mixin for accelerator runners whose bound callable synchronises (so the host timing is
    end-to-end) and also records device events around the inference alone. The subclass sets
    `self._read_device_ms` to a zero-argument callable returning the last run's device time in
    ms (None before bind()); the samples of the timed queries become stats["device_latency"]."""

    _read_device_ms: Callable[[], float] | None = None
    device_timing_scope: ClassVar[str] = "device events around the inference alone"

    def after_sample(self, timed: bool) -> None:
        if timed and self._read_device_ms is not None:
            self.__dict__.setdefault("_device_samples", []).append(float(self._read_device_ms()))

    def extra_stats(self, batch: int, duration_s: float,
                    protocol: LatencyProtocol) -> LatencyStats:
        samples = self.__dict__.pop("_device_samples", [])
        if not samples:
            return {}
        stats = latency_stats(np.array(samples), batch, duration_s=duration_s, protocol=protocol)
        stats.update(timing_scope=self.device_timing_scope,
                     samples_ms=[round(s, 5) for s in samples])
        return {"device_latency": stats}


def runner_names() -> list[str]:
    """Every runtime edgekit has a runner for (imports the runner modules, not the libraries)."""
    load_modules("edgekit.runtimes")
    return list(RUNNERS)


def get_runner(name: str) -> type[Runner]:
    if name not in RUNNERS:
        load_modules("edgekit.runtimes")
    if name not in RUNNERS:
        raise InputError(f"unknown runtime {name!r}", hint=suggest(name, list(RUNNERS)))
    return RUNNERS[name]


def runner_for_artifact(path: str | Path, preferred: str | None = None) -> type[Runner]:
    """The runner class for an artifact file, from its suffix (or the preferred runtime)."""
    if preferred:
        return get_runner(preferred)
    kind = kinds.by_suffix(path)
    if kind is None or not kind.runnable:
        suffix = Path(path).suffix
        raise InputError(f"no runtime runs {Path(path).name} (suffix {suffix or 'none'})",
                         hint="benchmark an .onnx, .xml (OpenVINO IR) or .plan (TensorRT) file, "
                         "or an output folder")
    return get_runner(kind.runtimes[0])
