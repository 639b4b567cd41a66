"""The measurement's records, typed: what a timed run, the machine sampler beside it and a
speed-up interval hand to their callers. Each stays a JSON mapping (it is written into the
result record and sent back from devices as is); the TypedDicts name its keys, so a signature
says what it passes instead of `dict[str, Any]`. Plain typing only: the lean runtimes import it."""

from __future__ import annotations

from typing import Any, TypedDict


class Spread(TypedDict, total=False):
    """min/max/mean of one quantity over a window (sampler.min_max_mean), with where it started
    and how far it fell when it is a clock."""

    min: float
    max: float
    mean: float
    start: float
    drop: float


class CpuSummary(TypedDict, total=False):
    """/proc/stat over the window: cores other processes and steal took, our own."""

    cores: int | None
    window_s: float
    other_cores: float
    other_cores_peak: float
    steal_cores: float
    own_cores: float
    busy_cores: float
    clock_ticks_per_s: int
    involuntary_switches: int
    involuntary_switches_per_s: float
    voluntary_switches: int
    loadavg_1m: dict[str, float]


class CpuFreqSummary(TypedDict, total=False):
    """The fastest core's clock over the window (MHz)."""

    samples: int
    start_mhz: float
    min_mhz: float
    max_mhz: float
    drop: float


class NvmlSummary(TypedDict, total=False):
    """An NVIDIA GPU over the window (NVML)."""

    gpu_index: int
    name: str | None
    samples: int
    clock_event_reasons: list[str]
    sm_clock_mhz: Spread
    temp_c: Spread
    power_w: Spread
    energy_counter_j: float
    energy_window_s: float
    energy_counter_error: str


class TegraReading(TypedDict, total=False):
    """One tegrastats line (or one INA3221 read): rail power, clocks, load, temperatures."""

    rails_mw: dict[str, float]
    cpu_mhz: list[float | None]
    gpu_load_pct: float
    gpu_mhz: float
    emc_mhz: float
    temps_c: dict[str, float]


class RailsSummary(TypedDict, total=False):
    """A Jetson's rails, clocks and temperatures over the window (tegrastats or INA3221)."""

    samples: int
    unknown_lines: list[str]
    rails_mw: dict[str, Spread]
    gpu_clock_mhz: Spread
    cpu_clock_mhz: Spread
    temps_max_c: dict[str, float]


# what one sampler Source summarises (thermal zones: {zone: {start_c, max_c}})
SourceSummary = (CpuSummary | CpuFreqSummary | NvmlSummary | RailsSummary
                 | dict[str, dict[str, float]])


class EnergyWindow(TypedDict, total=False):
    """Joules over one timed window from one power source, with its uncertainty."""

    source: str
    joules: float
    window_s: float
    mean_w: float
    uncertainty_j: float
    method: str
    readings: int
    sampling_hz: float | None
    counter_update_s: float


class MachineSummary(TypedDict, total=False):
    """What the sampler saw beside one timed window (MachineSampler.finish): a section per
    source that was read, the window's energy, and what was not sampled or failed."""

    interval_s: float
    ticks: int
    window_s: float
    cpu: CpuSummary
    cpu_freq: CpuFreqSummary
    thermal: dict[str, dict[str, float]]
    nvml: NvmlSummary
    tegrastats: RailsSummary
    ina3221: RailsSummary
    energy_window: EnergyWindow
    not_sampled: list[str]
    errors: list[str]
    failed: list[str]


class Energy(TypedDict, total=False):
    """The record's `energy`: joules per query (and per image) over the timed window, or
    `source` None and a `note` saying why there is no number."""

    source: str | None
    note: str
    joules: float
    uncertainty_j: float
    j_per_query: float
    j_per_query_uncertainty: float
    mj_per_image: float
    mean_w: float
    window_s: float
    readings: int | None
    sampling_hz: float | None
    method: str | None
    queries: int
    batch: int
    counter_update_s: float


class Verdict(TypedDict, total=False):
    """Whether the machine disturbed a timing (interference.combined_verdict)."""

    disturbed: bool | None
    disturbed_reasons: list[str]
    reruns: int


class Validity(TypedDict, total=False):
    """Whether a run met the protocol's minimums, and which percentiles it may claim."""

    min_queries_met: bool
    min_duration_met: bool
    p90_claimable: bool
    p99_claimable: bool
    p90_min_samples: int
    p99_min_samples: int
    reasons: list[str]


class Attempt(TypedDict):
    """One attempt of a run measured under the rerun rule (interference.measure_undisturbed)."""

    attempt: int
    disturbed: bool | None
    reasons: list[str]
    p50_ms: float | None
    other_cores: float | None


class LatencyStats(TypedDict, total=False):
    """One timed run (latency.latency_stats, Runner.measure_latency, speedup.alternate): the
    percentiles and their early-stopping bounds, validity, how it ran, every sample, and what
    the machine did meanwhile. A subset of these keys where a caller asked for `fields`."""

    count: int
    duration_s: float
    batch: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_per_s: float
    p90_bound_ms: float | None
    p99_bound_ms: float | None
    valid: bool
    validity: Validity
    warmup_queries: int
    warmup_s: float
    stopped_by: str
    timing_scope: str
    protocol: dict[str, Any]  # LatencyProtocol.model_dump()
    samples_ms: list[float]
    round_counts: list[int]
    rounds: int
    device_latency: LatencyStats
    machine: MachineSummary
    disturbed: bool | None
    disturbed_reasons: list[str]
    energy: Energy
    attempts: list[Attempt]
    reruns: int
    remote: dict[str, Any]  # host, job id, whether the job had already run (remote timings)


class SpeedupInterval(TypedDict, total=False):
    """The candidate's speed-up over the original with its interval (speedup.speedup_interval),
    and with `compare` the verdict against `min_speedup`."""

    speedup: float
    confidence: float
    segments: list[int]
    ci_low: float
    ci_high: float
    method: str
    verdict: str
    min_speedup: float


class PairedSpeedup(SpeedupInterval, total=False):
    """A candidate and its original timed together in alternating rounds
    (validate.bench.time_against_original): the interval with both p50s, the rounds, and where
    they were timed (`remote`: the SSH job; `ray`: the node)."""

    rounds: int
    p50_ms: float
    reference_p50_ms: float
    remote: dict[str, Any]
    ray: dict[str, Any]
    seconds: float  # the rounds' wall time (optimize's confirmation: part of its measuring)


class LayerRow(TypedDict, total=False):
    """One layer of a per-layer profile (runtimes/profile.py): what the runtime called it, its
    op and the precision that ran, ms per run; joined to the ONNX node and PyTorch module it
    came from (`for_node`: the layer a Quantize/DequantizeLinear kernel serves), its share."""

    layer: str
    op: str | None
    precision: str | None
    ms: float
    provider: str | None
    exec_type: str
    onnx_node: str | None
    onnx_op: str | None
    module: str | None
    for_node: str | None
    share: float


class LayerProfile(TypedDict, total=False):
    """The per-layer profile of one artifact (profile.profile), layers sorted by time."""

    profile_version: int
    artifact: str
    runtime: str
    batch: int
    runs: int
    warmup: int
    threads: int | None
    onnx_source: str | None
    total_ms: float
    layers: list[LayerRow]


class NodeTime(TypedDict):
    """A profile's time summed per ONNX node (profile.by_onnx_node)."""

    ms: float
    precision: str | None
    module: str | None
    layers: list[str]


class MachineInfo(TypedDict, total=False):
    """A GPU machine as TensorRT engine metadata sees it (runtimes/tensorrt.machine_info)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    gpu_index: int


class InputProfile(TypedDict):
    """A TensorRT optimization profile: min/opt/max shapes of the one input."""

    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


class BuildInfo(TypedDict, total=False):
    """What a TensorRT engine build used (targets/tensorrt.build_engine)."""

    weak_typing: bool
    workspace_mb: int
    tf32: bool
    dla_core: int | None
    gpu_fallback: bool
    timing_cache: dict[str, str | bool]
    build_seconds: float


class EngineMetadata(TypedDict, total=False):
    """The JSON written beside a TensorRT engine: the machine it was built for (MATCH_KEYS), its
    precision and input profile, the InputSpec, and the build's settings."""

    format: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_profile: InputProfile
    input_spec: dict[str, Any] | None  # InputSpec.model_dump(mode="json")
    built: str
    dla_core: int | None
    build: BuildInfo
    source_onnx: str


class RuntimeDetails(TypedDict, total=False):
    """What actually ran (Runner.describe, a record's `runtime_details`): the runtime, its
    library version and threads, and what each runtime adds (ONNX Runtime its providers,
    OpenVINO its devices and hints, TensorRT the GPU and engine, torch the device and CUDA)."""

    runtime: str
    version: str
    threads: int | None
    providers_used: list[str]
    providers_missing: list[str]
    fallback: str | None
    device: str
    execution_devices: Any
    performance_hint: Any
    inference_precision: Any
    num_streams: Any
    gpu: str
    compute_capability: str
    precision: str | None
    dla_core: int | None
    input_profile: InputProfile | None
    cuda_graphs: bool
    checkpoint: str
    device_name: str
    cuda: str | None
    cudnn: int | None
    allow_tf32_matmul: bool
    allow_tf32_cudnn: bool
