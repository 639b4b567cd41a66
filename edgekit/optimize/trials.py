"""Reading and judging an `edgekit optimize` study: candidates from its trials, the Pareto
front, the winner rule, and progress counts that do not touch the study while it runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.optimize.build import Arch
from edgekit.optimize.cache import digest
from edgekit.optimize.records import Candidate, Params
from edgekit.runtimes.interference import disturbed_suffix
from edgekit.runtimes.records import SpeedupInterval

STUDY_DB = "optuna.db"


def dwsep_choice(value: Any) -> str | int:
    return value if value in ("off", "auto") else int(value)


def plot_label(name: str) -> str:
    """A candidate's name as the report labels it (beside its runtime): no runtime, and no '.'
    (the report shows a file name's stem)."""
    from edgekit.optimize.space import runtimes

    for runtime in runtimes():
        name = name.replace(f"{runtime}:", "")
    return name.replace(".", "·")


def params_key(params: Params) -> str:
    return digest(sorted(params.items()))


def dominated(point: tuple[float, float], front: list[tuple[float, float]]) -> bool:
    lat, acc = point
    return any(lo <= lat and ao >= acc and (lo < lat or ao > acc) for lo, ao in front)


def front_points(study: Any) -> list[tuple[float, float]]:
    from optuna.trial import TrialState

    return [tuple(t.values) for t in study.get_trials(deepcopy=False,
                                                      states=(TrialState.COMPLETE,))]


def pareto(points: list[tuple[float, float]]) -> list[int]:
    from edgekit.results.report import pareto_front

    return pareto_front(points)


def candidate_name(params: Params) -> str:
    arch = Arch.of(params)
    name = f"{arch.label} {params['target']}"
    if params.get("fallback", "none") != "none":
        name += f" float:{params['fallback']}"
    return name


def candidates_of(study: Any) -> list[Candidate]:
    """Every finished trial of the study (this run's and earlier ones') as a candidate."""
    from optuna.trial import TrialState

    out: list[Candidate] = []
    seen = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        name = candidate_name(t.params)
        if name in seen:  # a sampler may propose a finished candidate again (a cache hit)
            continue
        seen.add(name)
        steps = t.user_attrs.get("steps") or []
        last = steps[-1] if steps else {}
        complete = t.state == TrialState.COMPLETE
        out.append({
            "trial": t.number, "name": name, "params": dict(t.params),
            "status": t.user_attrs.get("status", "measured"), "why": t.user_attrs.get("why", ""),
            "values": list(t.values) if complete else None,
            "p50_ms": last.get("p50_ms"), "top1": 100 * last["top1"] if last.get("top1") is not None else None,
            "disturbed": last.get("disturbed"),
            "key": last.get("key"), "artifact": last.get("artifact"),
            "steps": steps, "cost": t.user_attrs.get("cost", {}),
        })
    return out


def complexity(params: Params) -> tuple[int, int]:
    """How much a candidate changed the original: (transformations applied — pruning,
    substitution, a lower precision, a float-fallback set — then the precision: fp32 < fp16 <
    int8). The fp32 original on any runtime is (0, 0)."""
    precision = str(params.get("target", ":fp32")).split(":")[1]
    rank = {"fp32": 0, "fp16": 1}.get(precision, 2)
    steps = len(Arch.of(params).on()) \
        + (precision != "fp32") + (params.get("fallback", "none") != "none")
    return int(steps), rank


def not_slower(c: Candidate, min_speedup: float) -> bool:
    """Whether a candidate clears `min_speedup`: by its interval's verdict when it has one (only
    wholly below fails), else by its bare speed-up."""
    if c.get("speed_verdict"):
        return c["speed_verdict"] != "slower"
    return c["speedup"] >= min_speedup - 1e-9


def choose(candidates: list[Candidate], max_drop: float, min_speedup: float
           ) -> tuple[Candidate | None, str]:
    """The fastest measured candidate within the accuracy budget and not slower than
    `min_speedup` times the fp32 original on its fastest runtime beyond the noise (its
    `speed_verdict`, see runtimes/speedup.py); why, in one sentence."""
    measured = [c for c in candidates if c.get("values") and c.get("drop_points") is not None]
    within = [c for c in measured if c["drop_points"] <= max_drop + 1e-9]
    fast = [c for c in within if not_slower(c, min_speedup)]
    if not fast:
        if not measured:
            return None, "no candidate was measured"
        if not within:
            return None, (f"no candidate is within {max_drop:g} points of the original's top-1")
        return None, (f"no candidate within {max_drop:g} points runs at least {min_speedup:g}× "
                      "as fast as the fp32 original")
    winner = min(fast, key=lambda c: (c["p50_ms"], -c["top1"]))
    which = "the only candidate" if len(fast) == 1 else f"the fastest of {len(fast)} candidates"
    ci = winner.get("speedup_ci")
    level = 100 * winner.get("speedup_ci_level", 0.99)
    interval = f" ({level:g}% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci and ci[0] != ci[1] else ""
    why = (f"{which} within {max_drop:g} points of the original's top-1 (its drop: "
           f"{winner['drop_points']:.2f}) and at least {min_speedup:g}× as fast as the fp32 "
           f"original on its fastest runtime: {winner['p50_ms']:.3f} ms, "
           f"{winner['speedup']:.2f}×{interval}")
    why += disturbed_suffix(winner.get("speedup_disturbed"))  # (issue 18)
    return winner, why


def prefer_simpler(winner: Candidate, candidates: list[Candidate], max_drop: float,
                   min_speedup: float,
                   interval: Callable[[Candidate, Candidate], SpeedupInterval | None]
                   ) -> tuple[Candidate, str | None]:
    """A tie within the noise goes to the simpler artifact: among the candidates that also
    qualify and are simpler (`complexity`), the simplest one the winner is not faster than
    beyond the noise (`interval(winner, other)`: the winner's speed-up over it with its
    interval; a tie when the interval reaches 1). Returns (the choice, why it changed or None)."""
    simpler = [c for c in candidates if c is not winner and c.get("values")
               and c.get("drop_points") is not None and c["drop_points"] <= max_drop + 1e-9
               and not_slower(c, min_speedup)
               and complexity(c["params"]) < complexity(winner["params"])]
    for other in sorted(simpler, key=lambda c: (complexity(c["params"]), c["p50_ms"])):
        iv = interval(winner, other)
        if iv is not None and iv["ci_low"] <= 1.0:
            return other, (f"{other['name']} ({other['p50_ms']:.3f} ms) is simpler and ties with "
                           f"the fastest, {winner['name']} ({winner['p50_ms']:.3f} ms): "
                           f"{winner['name']} is {iv['speedup']:.2f}× as fast, "
                           f"{100 * iv['confidence']:g}% CI {iv['ci_low']:.2f}–"
                           f"{iv['ci_high']:.2f}, within the noise")
    return winner, None


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_study(out_dir: str | Path) -> None:
    """Refuse a damaged study file before the search starts (as the results store does): read
    only, its header, SQLite's quick_check of every page, and Optuna's tables. A damaged one
    used to fail every device's search mid-run (exit 1, "allow a larger --max-drop") and again
    on every rerun. InputError (exit 2) saying how to recover: the measurement cache in
    OUT/cache/ does not depend on it."""
    import sqlite3

    from edgekit.errors import InputError

    path = Path(out_dir) / STUDY_DB
    if not path.is_file() or path.stat().st_size == 0:
        return
    problem = None
    with open(path, "rb") as fh:
        if fh.read(16) != SQLITE_MAGIC:
            problem = "not an SQLite file"
    if problem is None:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True,
                                                    timeout=5)) as db:
                rows = db.execute("PRAGMA quick_check").fetchall()
                tables = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
            if [r[0] for r in rows] != ["ok"]:
                problem = str(rows[0][0])[:200]
            elif tables and not {"studies", "trials"} <= tables:
                problem = "an SQLite file without Optuna's tables"
        except sqlite3.DatabaseError as exc:
            problem = str(exc)[:200]
    if problem is not None:
        raise InputError(
            f"{path} (the search's Optuna study) is damaged ({problem}); the search cannot "
            "resume from it",
            hint=f"move it aside (mv {path} {path}.damaged) and rerun: the search starts a new "
                 f"study, and the measurement cache ({Path(out_dir) / 'cache'}) still serves "
                 "every candidate measured before")


def trial_count(out_dir: str | Path) -> int:
    """Finished (complete or pruned) trials of every study in an output folder, read without
    touching the study: safe while a search is creating or writing it."""
    import sqlite3

    path = Path(out_dir) / STUDY_DB
    if not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True,
                                                timeout=5)) as db:
            row = db.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
                             ).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(row[0])
