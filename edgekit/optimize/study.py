"""The trials of one device in `edgekit optimize`: its Optuna study (resumable, shared by the
devices' threads), the objective, the time budget, and the promotions to the full rung."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from edgekit.errors import EdgekitError, MissingDependencyError
from edgekit.optimize.build import UnchangedError
from edgekit.optimize.cache import digest
from edgekit.optimize.device_search import DeviceSearch, import_optuna
from edgekit.optimize.measure import DeviceLostError
from edgekit.optimize.trials import STUDY_DB, candidate_name, front_points, params_key


class StudyRunner:
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
        optuna = import_optuna()
        from optuna.trial import TrialState

        device = search.device
        started = time.monotonic()
        deadline = None if seconds is None else started + seconds
        self.say(f"{device.name}: {len(search.targets)} runtime/precision pairs, space of "
                 f"{search.space.size(search.targets)} candidates, {self.settings.trials} trials"
                 + (f", {seconds:.0f} s" if seconds is not None else ""))
        try:
            self._baselines(search)
        except DeviceLostError as exc:
            search.lost = exc.message
            return self._finish(search, None, time.monotonic() - started)
        study, _ = self._study(search)
        if not study.trials:  # the originals are candidates: enqueue them first, then the
            # original at every other precision (no training needed: cheap, and the anchors a
            # compressed candidate has to beat)
            for runtime in search.baselines:
                study.enqueue_trial({"prune": 0.0, "dwsep": "off", "target": f"{runtime}:fp32"})
            if 0.0 in search.space.prune and "off" in search.space.dwsep:
                for target in search.targets:
                    if not target.endswith(":fp32"):
                        extra = {"fallback": search.space.fallback_names()[0]} \
                            if target.endswith(":int8") else {}
                        study.enqueue_trial({"prune": 0.0, "dwsep": "off", "target": target,
                                             **extra})
        durations: list[float] = []

        def objective(trial):
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            params = {"prune": trial.suggest_categorical("prune", search.space.prune),
                      "dwsep": trial.suggest_categorical(
                          "dwsep", [str(d) for d in search.space.dwsep]),
                      "target": trial.suggest_categorical("target", search.targets)}
            if params["target"].endswith(":int8"):
                params["fallback"] = trial.suggest_categorical("fallback",
                                                               search.space.fallback_names())
            name = candidate_name(params)
            earlier = next((t for t in study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED)) if candidate_name(t.params) == name), None)
            if earlier is not None:  # the sampler proposed a finished candidate: nothing to do
                trial.set_user_attr("status", "repeat")
                trial.set_user_attr("why", f"the candidate of trial {earlier.number}")
                if earlier.state == TrialState.COMPLETE:
                    return tuple(earlier.values)
                raise optuna.TrialPruned()
            runtime = params["target"].split(":")[0]
            # what a missing dependency rules out: every TensorRT candidate (no TensorRT or no
            # GPU there), else that runtime at that precision (e.g. NNCF for OpenVINO int8)
            scope = runtime if runtime == "tensorrt" else params["target"]
            gone = search.inapplicable.get(("dwsep", params["dwsep"]))
            if gone:  # the dwsep choice substituted nothing at an earlier candidate
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", f"dropped from the space: {gone}")
                raise optuna.TrialPruned()
            if scope in search.unusable:  # found missing at an earlier candidate
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", search.unusable[scope])
                raise optuna.TrialPruned()
            front = front_points(study)
            began = time.perf_counter()
            built = dict(self._built_seconds())
            try:
                outcome = self._evaluate(search, params, front)
            except DeviceLostError as exc:  # the trial fails (not pruned): a rerun retries it
                search.lost = exc.message
                trial.set_user_attr("why", exc.message)
                study.stop()
                raise
            except MissingDependencyError as exc:  # the runtime (or its GPU) is missing there:
                # no candidate of it can run, so the rest of them are skipped with this reason
                search.unusable[scope] = exc.message
                self.say(f"{device.name}: {scope} candidates skipped: {exc.message}")
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            except UnchangedError as exc:  # dwsep substituted nothing: no candidate to build,
                # and the choice is dropped from the space (said once; its trials are skipped)
                knob = ("dwsep", params["dwsep"])
                if knob not in search.inapplicable:
                    search.inapplicable[knob] = exc.message
                    search.dropped.append({"knob": "dwsep", "value": params["dwsep"],
                                           "why": exc.message})
                    self.say(f"{device.name}: dwsep {params['dwsep']} dropped from the space: "
                             f"{exc.message}")
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            except EdgekitError as exc:  # this candidate cannot be made (e.g. pruning wipes a layer)
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            cost = {k: round(self._built_seconds().get(k, 0.0) - built.get(k, 0.0), 3)
                    for k in self.builder.seconds}
            cost["measure_s"] = round(sum(s["measure_s"] for s in outcome["steps"]), 3)
            cost["total_s"] = round(time.perf_counter() - began, 3)
            durations.append(cost["total_s"])
            for key in ("status", "why", "steps"):
                trial.set_user_attr(key, outcome[key])
            trial.set_user_attr("cost", cost)
            if outcome["values"] is None:
                raise optuna.TrialPruned()
            return outcome["values"]

        out_of_time = []

        def keep_time(study, _trial) -> None:
            if deadline is None:
                return
            typical = sorted(durations)[len(durations) // 2] if durations else 0.0
            if time.monotonic() + typical > deadline:
                out_of_time.append(True)
                study.stop()

        def tried() -> int:
            return len({candidate_name(t.params) for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))})

        queued = [t for t in study.trials if t.state == TrialState.WAITING]
        wanted = [{"prune": 0.0, "dwsep": "off", "target": f"{rt}:fp32"} for rt in search.baselines]
        originals = [t for t in queued if t.system_attrs.get("fixed_params") in wanted]
        if originals and search.lost is None:  # measured already (cache hits): whatever the time
            study.optimize(objective, n_trials=len(originals), catch=(DeviceLostError,))
        # `trials` counts distinct candidates: a sampler's repeats (cheap, answered from the
        # study) do not use up the budget, within a bound on the attempts.
        wanted = min(self.settings.trials, search.space.size(search.targets))
        attempts = 0
        while (tried() < wanted and attempts < 3 * self.settings.trials + 10
               and search.lost is None and not out_of_time
               and (deadline is None or time.monotonic() < deadline)):
            batch = wanted - tried()
            timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
            study.optimize(objective, n_trials=batch, timeout=timeout,
                           callbacks=[keep_time], catch=(DeviceLostError,))
            attempts += batch
        return self._finish(search, study, time.monotonic() - started)

