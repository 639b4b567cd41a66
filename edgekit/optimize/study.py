"""The trials of one device in `edgekit optimize`: its Optuna study (resumable, shared by the
devices' threads), the objective, the time budget, and the promotions to the full rung."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from edgekit.errors import EdgekitError, MissingDependencyError
from edgekit.optimize.budget import BudgetSteps
from edgekit.optimize.build import Arch, UnchangedError, portable
from edgekit.optimize.cache import digest
from edgekit.optimize.device_search import DeviceSearch, import_optuna
from edgekit.optimize.measure import DeviceLostError
from edgekit.optimize.records import Candidate, Outcome, Params
from edgekit.optimize.schedule import Plan
from edgekit.optimize.space import original_params
from edgekit.optimize.trials import (
    STUDY_DB,
    candidate_name,
    candidates_of,
    choose,
    dominated,
    front_points,
    params_key,
    pareto,
)


def scope_of(params: Params) -> str:
    """What a missing dependency rules out: every TensorRT candidate (no TensorRT or no GPU
    there), else that runtime at that precision (e.g. NNCF for OpenVINO int8)."""
    runtime = params["target"].split(":")[0]
    return params["target"] if portable(runtime) else runtime


def arch_of(candidate: Candidate) -> Arch:
    return Arch.of(candidate["params"])


def promotable(candidates: list[Candidate], search: DeviceSearch, max_drop: float,
               min_speedup: float) -> list[Candidate]:
    """The short-only candidates that could still change the winner, fastest first, each with
    its `arch`: faster than the winner so far (than the original's bar when there is none)
    and, at the original's top-1, on the front; the fastest of each architecture, and every
    one whose architecture's full distillation exists (carrying those costs no training)."""
    if not search.baselines or not search.space.distill.has_full:
        return []
    ref_points = 100 * search.reference_top1
    candidates = [{**c, "drop_points": ref_points - c["top1"],
                   "speedup": search.fastest_fp32_ms / c["p50_ms"]}
                  if c.get("values") and "drop_points" not in c else c for c in candidates]
    winner, _ = choose(candidates, max_drop, min_speedup)
    bar = winner["p50_ms"] if winner is not None else search.fastest_fp32_ms / min_speedup
    ref = 100 * search.reference_top1
    front = [tuple(c["values"]) for c in candidates if c.get("values")]
    front = [front[i] for i in pareto(front)]
    out: list[Candidate] = []
    seen = set()
    for c in sorted((c for c in candidates if c["status"] == "short" and c.get("p50_ms")),
                    key=lambda c: c["p50_ms"]):
        if c["p50_ms"] >= bar or c["name"] in search.cut or dominated((c["p50_ms"], ref), front):
            continue
        arch = arch_of(c)
        if arch.label in seen:
            continue
        seen.add(arch.label)
        out.append({**c, "arch": arch.label})
    return out


class _Trials:
    """A study seen through one trial state and the promotions only (for candidates_of)."""

    def __init__(self, study: Any, state: Any) -> None:
        self.study, self.state = study, state

    def get_trials(self, deepcopy: bool = False, states: Any = None) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=deepcopy, states=(self.state,))
                if t.user_attrs.get("rung") == "full"]


@dataclass
class Run:
    """One device's trials under way: its study, deadline, plan and live bar."""

    search: DeviceSearch
    study: Any
    deadline: float | None
    plan: Plan
    out_of_time: bool = False
    advance: Any = None  # the live bar's advance(n, **fields), when one is shown

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def tried(self) -> int:
        from optuna.trial import TrialState

        return len({candidate_name(t.params) for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))})


class StudyRunner(BudgetSteps):
    """The Optimizer's trials (a part of edgekit.optimize.search.Optimizer)."""

    def _study(self, search: DeviceSearch):
        optuna = import_optuna()
        with self._machine_lock:  # one storage for every device's study (it makes the tables)
            if self._storage is None:
                self._storage = optuna.storages.RDBStorage(
                    f"sqlite:///{(self.out / STUDY_DB).resolve()}", heartbeat_interval=30,
                    grace_period=120,  # several devices' trials write at once: wait a turn
                    engine_kwargs={"connect_args": {"timeout": 60}})
        storage = self._storage
        name = f"{search.device.name}-{digest(search.space.model_dump(mode='json'), self.max_drop, self.settings.min_speedup, search.state, search.batch, self.eval_key, self.builder.checkpoint_sha)}"
        size = search.space.size(search.targets)
        from optuna.trial import TrialState

        # A trial killed mid-way (kill -9) holds only the params it had suggested, and the
        # brute-force sampler's tree then refuses the study ("param_name mismatch"): a resumed
        # study with failed or dead trials is sampled by TPE (its failed candidates are queued
        # again by _fail_dead_trials, and finished work is a cache hit).
        known = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
        interrupted = name in known and bool(optuna.load_study(
            study_name=name, storage=storage).get_trials(
                deepcopy=False, states=(TrialState.FAIL, TrialState.RUNNING)))
        sampler = optuna.samplers.BruteForceSampler(seed=self.settings.seed) \
            if size <= self.settings.trials and not interrupted else \
            optuna.samplers.TPESampler(seed=self.settings.seed, multivariate=True)
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=["minimize", "maximize"], load_if_exists=True)
        self._fail_dead_trials(study, storage)
        return study, storage

    @staticmethod
    def _fail_dead_trials(study: Any, storage: Any) -> None:
        """A trial left RUNNING by a process of this host that no longer exists (killed) is
        marked failed, so the sampler proposes its candidate again (its finished exports and
        measurements are cache hits). Other hosts' trials are left to Optuna's heartbeat."""
        from optuna.trial import TrialState

        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get("worker", ""))
            if not worker.startswith(host + ":"):
                continue
            pid = int(worker.rsplit(":", 1)[1])
            try:
                os.kill(pid, 0)
                alive = pid != os.getpid()
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if not alive:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        # Candidates whose trial failed (killed, device lost) and that no finished or waiting
        # trial covers are queued again: samplers count failed trials as tried.
        covered = {params_key(t.params) for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING,
                                    TrialState.RUNNING))}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            key = params_key(trial.params)
            if trial.params and key not in covered:
                study.enqueue_trial(dict(trial.params))
                covered.add(key)

    def _search(self, search: DeviceSearch, seconds: float | None) -> dict[str, Any]:
        device = search.device
        started = time.monotonic()
        deadline = None if seconds is None else started + seconds
        self.say(f"{device.name}: {len(search.targets)} runtime/precision pairs, space of "
                 f"{search.space.size(search.targets)} candidates, {self.settings.trials} trials"
                 + (f", {seconds:.0f} s" if seconds is not None else ""))
        try:
            self._baselines(search)
            search.baselines_s = time.monotonic() - started
        except DeviceLostError as exc:
            search.lost = exc.message
            return self._finish(search, None, time.monotonic() - started)
        study, _ = self._study(search)
        if not study.trials:
            self._enqueue_originals(search, study)
        run = Run(search, study, deadline, self._plan(search, seconds))
        self._price_short(run)
        self.say(f"{device.name}: {run.plan.line(0, run.left())}")
        self._run_originals(run)
        self._run_trials(run)
        self._promote(run)
        return self._finish(search, study, time.monotonic() - started)

    @staticmethod
    def _enqueue_originals(search: DeviceSearch, study: Any) -> None:
        """The originals are candidates: enqueued first, then the original at every other
        precision (no training needed: cheap, and the anchors a compressed candidate has to
        beat)."""
        for runtime in search.baselines:
            study.enqueue_trial({**original_params(), "target": f"{runtime}:fp32"})
        if search.space.has_original():
            for target in search.targets:
                if not target.endswith(":fp32"):
                    extra = {"fallback": search.space.fallback_names()[0]} \
                        if target.endswith(":int8") else {}
                    study.enqueue_trial({**original_params(), "target": target, **extra})

    def _plan(self, search: DeviceSearch, seconds: float | None) -> Plan:
        space = search.space
        archs = 1
        for choices in space.knob_values().values():
            archs *= len(choices)
        archs -= int(space.has_original())
        return Plan(trials=min(self.settings.trials, space.size(search.targets)),
                    short_images=space.distill.images("short", self.train_size),
                    full_images=space.distill.images("full", self.train_size),
                    budget=seconds, archs=max(1, archs), space=space.size(search.targets))

    def _run_originals(self, run: Run) -> None:
        """The originals' queued trials: measured already (cache hits), whatever the time."""
        from optuna.trial import TrialState

        wanted = [{**original_params(), "target": f"{rt}:fp32"} for rt in run.search.baselines]
        queued = [t for t in run.study.trials if t.state == TrialState.WAITING]
        originals = [t for t in queued if t.system_attrs.get("fixed_params") in wanted]
        if originals and run.search.lost is None:
            run.study.optimize(lambda trial: self._objective(run, trial),
                               n_trials=len(originals), catch=(DeviceLostError,))

    def _run_trials(self, run: Run) -> None:
        """The candidates, until `trials` distinct ones are tried or the time left is the
        full distillations' reserve. `trials` counts distinct candidates: a sampler's repeats
        (cheap, answered from the study) do not use it up, within a bound on the attempts."""
        from edgekit.progress import progress

        wanted = run.plan.trials
        attempts = 0
        shown = self._show_progress(run)
        with progress(f"{run.search.device.name}: trials", wanted) if shown \
                else contextlib.nullcontext(None) as advance:
            run.advance = advance
            if advance is not None and run.tried():
                advance(run.tried())  # the originals, measured already
            while (run.tried() < wanted and attempts < 3 * self.settings.trials + 10
                   and run.search.lost is None and not run.out_of_time
                   and (run.deadline is None or time.monotonic() < run.deadline)):
                batch = wanted - run.tried()
                timeout = None if run.deadline is None else \
                    max(1.0, run.deadline - time.monotonic())
                run.study.optimize(lambda trial: self._objective(run, trial), n_trials=batch,
                                   timeout=timeout, callbacks=[lambda *_: self._keep_time(run)],
                                   catch=(DeviceLostError,))
                attempts += batch
            run.advance = None
        self._sample_on(run)

    def _sample_on(self, run: Run) -> None:
        """Past `trials`, with a time budget: one more candidate at a time while the space has
        untried ones, the time left pays for one (beyond the promotions' reserve) and the
        front still moves (Plan.keep_sampling); why it stops is said."""
        if run.search.lost is not None or run.tried() < run.plan.trials:
            return  # stopped before --trials: out of time, or the device was lost
        name, stale, said, attempts = run.search.device.name, 0, False, 0
        while run.search.lost is None and attempts < 3 * (run.plan.space or 0) + 10:
            why = run.plan.keep_sampling(run.tried(), run.left(), self._reserve(run), stale)
            if why is not None:
                if said or (run.left() is not None and run.tried() < (run.plan.space or 0)):
                    self.say(f"{name}: sampling stopped: {why}")
                return
            if not said:
                self.say(f"{name}: {run.tried()} candidates tried and {run.left():.0f} s left, "
                         f"which pays for more (~{run.plan.typical_trial_s:.0f} s each): sampling "
                         "on while the budget lasts")
                said = True
            before, tried = set(front_points(run.study)), run.tried()
            run.study.optimize(lambda trial: self._objective(run, trial), n_trials=1,
                               catch=(DeviceLostError,))
            attempts += 1
            if run.tried() == tried:
                continue  # a repeat the sampler proposed: answered from the study
            front = front_points(run.study)
            new = {front[i] for i in pareto(front)} - before
            stale = 0 if new else stale + 1

    def _show_progress(self, run: Run) -> bool:
        """A live bar for one device's trials, on a terminal only (several devices' threads,
        --json and logs get the plan lines alone)."""
        from edgekit.progress import live

        return len(self.fleet) == 1 and self.live_progress and live()

    def _keep_time(self, run: Run) -> None:
        """Stop the trials when the next one would run into the reserve that the promotions'
        full distillations need (study.py's `_promote`), or past the deadline."""
        if run.deadline is None:
            return
        reserve = self._reserve(run)
        if time.monotonic() + run.plan.typical_trial_s + reserve > run.deadline:
            run.out_of_time = True
            run.study.stop()

    def _reserve(self, run: Run) -> float:
        """Seconds kept for the full distillations of the architectures waiting for one (each
        with a short-only candidate faster than the winner so far), at most half the time left."""
        cost = run.plan.full_cost()
        if not cost:
            return 0.0
        waiting = {c["arch"] for c in promotable(self._candidates(run.study), run.search,
                                                 self.max_drop, self.settings.min_speedup)}
        return min(len(waiting) * cost, 0.5 * max(0.0, run.left() or 0.0))

    def _objective(self, run: Run, trial: Any):
        """One trial: a candidate proposed (or a promotion queued), built, measured, recorded."""
        optuna = import_optuna()
        search = run.search
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = self._suggest(search, trial)
        promote = trial.user_attrs.get("rung") == "full"
        skipped = None if promote else self._skip(run, params)
        if skipped is not None:
            for key, value in skipped.items():
                if key != "values":
                    trial.set_user_attr(key, value)
            if skipped.get("values") is not None:
                return skipped["values"]
            raise optuna.TrialPruned()
        began = time.perf_counter()
        built = dict(self._built_seconds())
        outcome = self._outcome(run, trial, params, promote)
        cost = {k: round(self._built_seconds().get(k, 0.0) - built.get(k, 0.0), 3)
                for k in self.builder.seconds}
        cost["measure_s"] = round(sum(s["measure_s"] for s in outcome["steps"]), 3)
        cost["total_s"] = round(time.perf_counter() - began, 3)
        self._note_cost(run, cost, outcome)
        for key in ("status", "why", "steps"):
            trial.set_user_attr(key, outcome[key])
        trial.set_user_attr("cost", cost)
        if outcome["values"] is None:
            raise optuna.TrialPruned()
        return outcome["values"]

    @staticmethod
    def _suggest(search: DeviceSearch, trial: Any) -> Params:
        params = {knob: trial.suggest_categorical(knob, choices)
                  for knob, choices in search.space.categoricals().items()}
        params["target"] = trial.suggest_categorical("target", search.targets)
        if params["target"].endswith(":int8"):
            params["fallback"] = trial.suggest_categorical("fallback",
                                                           search.space.fallback_names())
        return params

    @staticmethod
    def _skip(run: Run, params: Params) -> Outcome | None:
        """{status, why[, values]} for a trial with nothing to do: a finished candidate proposed
        again, a dwsep choice found a no-op, a runtime found missing."""
        from optuna.trial import TrialState

        name = candidate_name(params)
        earlier = next((t for t in run.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED)) if candidate_name(t.params) == name), None)
        if earlier is not None:  # the sampler proposed a finished candidate: nothing to do
            return {"status": "repeat", "why": f"the candidate of trial {earlier.number}",
                    "values": tuple(earlier.values)
                    if earlier.state == TrialState.COMPLETE else None}
        gone = next((run.search.inapplicable[k] for k in params.items()
                     if k in run.search.inapplicable), None)
        if gone:  # the choice changed nothing at an earlier candidate (dwsep: no conv)
            return {"status": "skipped", "why": f"dropped from the space: {gone}"}
        if scope_of(params) in run.search.unusable:  # found missing at an earlier candidate
            return {"status": "skipped", "why": run.search.unusable[scope_of(params)]}
        return None

    def _outcome(self, run: Run, trial: Any, params: Params,
                 promote: bool) -> Outcome:
        """The candidate evaluated; what cannot be made or run is recorded and pruned."""
        optuna = import_optuna()
        search, device = run.search, run.search.device
        scope = scope_of(params)
        try:
            return self._evaluate(search, params, front_points(run.study), promote=promote,
                                  full_affordable=lambda: self._full_affordable(run),
                                  unpaid=lambda arch: self._unpaid(run, arch))
        except DeviceLostError as exc:  # the trial fails (not pruned): a rerun retries it
            search.lost = exc.message
            trial.set_user_attr("why", exc.message)
            run.study.stop()
            raise
        except MissingDependencyError as exc:  # the runtime (or its GPU) is missing there:
            # no candidate of it can run, so the rest of them are skipped with this reason
            search.unusable[scope] = exc.message
            self.say(f"{device.name}: {scope} candidates skipped: {exc.message}")
            status, why = "skipped", exc.message
        except UnchangedError as exc:  # the pass changed nothing: no candidate to build,
            # and the choice is dropped from the space (said once; its trials are skipped)
            knob = (exc.knob, params[exc.knob])
            if knob not in search.inapplicable:
                search.inapplicable[knob] = exc.message
                search.dropped.append({"knob": exc.knob, "value": params[exc.knob],
                                       "why": exc.message})
                self.say(f"{device.name}: {exc.knob} {params[exc.knob]} dropped from the "
                         f"space: {exc.message}")
            status, why = "skipped", exc.message
        except EdgekitError as exc:  # this candidate cannot be made (e.g. pruning wipes a layer)
            status, why = "failed", exc.message
        trial.set_user_attr("status", status)
        trial.set_user_attr("why", why)
        raise optuna.TrialPruned()

    def _full_affordable(self, run: Run) -> bool:
        """Whether the time left pays for one more full distillation (always, with no limit)."""
        return run.plan.full_allowed(run.left()) > 0

    def _note_cost(self, run: Run, cost: dict[str, float], outcome: Outcome) -> None:
        """The plan learns what the trial cost; the first timed distillation re-plans (said
        once), and the live bar moves."""
        had = run.plan.full_cost()
        run.plan.note_costs(cost, outcome["steps"])
        if self._shrink_short(run) or (had is None and run.plan.full_cost() is not None):
            self.say(f"{run.search.device.name}: {run.plan.line(run.tried() + 1, run.left())}")
        if run.advance is not None:
            done = run.tried() + 1
            eta = run.plan.eta(done, run.left())
            run.advance(1, eta=f"{eta:.0f}s" if eta is not None else "?")

    def _candidates(self, study: Any) -> list[Candidate]:
        """The study's candidates, each promoted one as its full-rung trial."""
        from optuna.trial import TrialState

        promoted = {c["name"]: c for c in candidates_of(_Trials(study, TrialState.COMPLETE))}
        return [promoted.get(c["name"], c) for c in candidates_of(study)]

    def _promote(self, run: Run) -> None:
        """After the trials, while the time left pays for it: the fastest short-only candidate
        of each architecture that is faster than the winner so far is carried to the full rung
        (whatever its short result: the budget decides, not a margin), one at a time, the
        winner recomputed after each. What is not promoted, and why, is kept for the report."""
        search = run.search
        while search.lost is None:
            waiting = promotable(self._candidates(run.study), search, self.max_drop,
                                 self.settings.min_speedup)
            if not waiting:
                return
            made = [c for c in waiting if self._made(search, arch_of(c), "full")]
            pick = made[0] if made else waiting[0]
            cost = 0.0 if made else (run.plan.full_cost() or 0.0)
            left = run.left()
            if left is not None and cost + run.plan.typical_trial_s > left:
                for c in waiting:
                    search.cut[c["name"]] = (
                        f"the time budget ran out before its full distillation (~{cost:.0f} s, "
                        f"{max(0.0, left):.0f} s left)")
                self.say(f"{search.device.name}: {len(waiting)} candidate(s) faster than the "
                         f"winner left at the short rung: ~{cost:.0f} s for a full "
                         f"distillation, {max(0.0, left):.0f} s left")
                return
            self.say(f"{search.device.name}: promoting {pick['name']} to the full distillation"
                     + (f" (~{cost:.0f} s)" if cost else ""))
            run.study.enqueue_trial(dict(pick["params"]), user_attrs={"rung": "full"})
            run.study.optimize(lambda trial: self._objective(run, trial), n_trials=1,
                               catch=(DeviceLostError,))
            if not self._was_promoted(run, pick):  # failed: never proposed again
                search.cut[pick["name"]] = "its full distillation failed"
                return
            search.cut.setdefault(pick["name"], "promoted once already")  # never twice

    @staticmethod
    def _was_promoted(run: Run, pick: Candidate) -> bool:
        from optuna.trial import TrialState

        return any(t.user_attrs.get("rung") == "full" and candidate_name(t.params) == pick["name"]
                   for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
