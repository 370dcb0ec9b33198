"""The analysis of one model: the stages of `lingua_jax.stages`, run in order in one results directory.

extract -> metrics -> regions -> stability -> ablation -> xstorycloze -> generation -> compare -> report. Each stage
runs in a temporary folder `.<stage>.partial` and becomes `<stage>/` only when complete, with its
`done.json`: its outputs and what they were computed from (the keys of the stages it read, the config
fields its code read with their values, the content fingerprints of its inputs; see
`lingua_jax.context`). A re-run reuses a finished stage only when all of that is unchanged and its
files check out; otherwise the stage runs again, and so does every stage that reads it. A stage that
skips itself (data absent, method not asked for) records nothing, so it runs once its inputs appear.
Until a stage completes, its previous results stay in place and valid; one run at a time holds a
results directory (`io.results_lock`); non-finite numbers stop the stage that produced them.

Paths are resolved once, when the `Analysis` is made (`config.resolve_paths`); every path a stage
records is relative to the results directory, so a results directory can be moved or copied. Bad input
(missing paths, unknown kinds or family, languages absent from the corpus, a results directory of
another model) fails before any heavy work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from lingua_jax import checkpoints, config as config_lib, sharding
from lingua_jax.context import TEXT_KINDS, XSTORYCLOZE_KINDS, Context
from lingua_jax.io import results_lock, write_atomic
from lingua_jax.stages import BY_NAME, NAMES, Stage

STAGES = NAMES


@dataclasses.dataclass(frozen=True)
class Done:
    """A stage's state in this run: its key (what dependents record), its outputs, whether it ran now."""

    key: str
    outputs: dict[str, Any]
    ran: bool


class Analysis:
    """One model's analysis in one results directory; `run(stages)` returns each stage's outputs."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config_lib.resolve_paths(config)
        self.results = Path(self.config.results_dir)
        if self.results.exists() and not self.results.is_dir():
            raise NotADirectoryError(f"results_dir={str(self.results)!r} is a file, not a directory")
        self.context = Context(self.config)
        self.ran: list[str] = []  # the stages the last `run` ran
        with self.context.recording(count=False):
            self.languages = self.context.languages
            self._check_config()

    def _check_config(self) -> None:
        ctx = self.context
        for setting, kind, known in (("ablation.text.kind", ctx.config.ablation.text.kind, TEXT_KINDS),
                                     ("xstorycloze.kind", ctx.config.xstorycloze.kind, XSTORYCLOZE_KINDS)):
            if kind not in known:
                raise ValueError(f"unknown {setting} {kind!r}; known: {list(known)}")
        if not self.config.model.get("random"):
            checkpoints.load_config(ctx.source.path)  # missing directory / config.json, unknown model_type
        unknown = set(self.languages) - set(ctx.corpus.languages)
        if unknown:
            raise ValueError(f"languages {sorted(unknown)} are not in the corpus ({list(ctx.corpus.languages)})")
        run_file = self.results / "run.json"
        if run_file.is_file():
            before = checkpoints.read_json(run_file).get("model")
            if before != self.model_identity:
                raise ValueError(f"results directory {str(self.results)!r} holds results of model {before}, "
                                 f"not {self.model_identity}: use another results_dir")

    @property
    def model_identity(self) -> str:
        """What the results directory holds results of: the random model's settings, "demo", the hub
        id, or the checkpoint directory."""
        model = self.config.model
        if model.get("random"):
            return "random:" + json.dumps(model.random.to_dict(), sort_keys=True)
        if model.path == "demo":
            return "demo"  # wherever the package is installed
        with self.context.recording(count=False):
            return self.context.source.hub_id or str(self.context.source.path)

    # --- running ---------------------------------------------------------------------------------------

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, dict[str, Any]]:
        """Run `stages` (and every stage they read), reusing finished ones; returns each one's outputs."""
        with results_lock(self.results):
            if jax.process_index() == 0:
                for leftover in [*self.results.glob(".*.partial"), *self.results.glob(".*.old")]:
                    logging.info("removing %s, left by a run that did not finish", leftover)
                    shutil.rmtree(leftover)
            if not (self.results / "run.json").is_file():
                write_atomic(self.results / "run.json", json.dumps({"model": self.model_identity}, indent=1))
            sharding.barrier("results directory ready")
            done = self._walk(stages, execute=True)
        return {name: state.outputs for name, state in done.items() if state is not None}

    def plan(self, stages: Sequence[str] = STAGES) -> list[str]:
        """The stages `run(stages)` would run now, in order (nothing is run or written)."""
        return [name for name, state in self._walk(stages, execute=False).items() if state and state.ran]

    def _walk(self, stages: Sequence[str], execute: bool) -> dict[str, Done | None]:
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; known: {list(STAGES)}")
        self.ran = []
        done: dict[str, Done | None] = {}

        def ensure(name: str, may_run: bool) -> Done | None:
            if name in done and (done[name] is not None or not may_run):
                return done[name]
            stage = BY_NAME[name]
            optional = stage.reads == ("*",)
            reads = STAGES[:STAGES.index(name)] if optional else stage.reads
            states = {d: ensure(d, may_run=not optional or d in stages) for d in reads}
            states = {d: s for d, s in states.items() if s is not None}
            keys = {d: s.key for d, s in states.items()}
            done[name] = self._recorded(stage, keys)
            if done[name] is not None:
                logging.info("stage %s: already done, skipped", name)
            elif may_run and execute:
                done[name] = self._execute(stage, {d: s.outputs for d, s in states.items()}, keys)
            elif may_run:
                done[name] = Done(f"to run: {name}", {}, ran=True)
            return done[name]

        for name in STAGES:
            if name in stages:
                ensure(name, may_run=True)
        return done

    def _recorded(self, stage: Stage, reads: dict[str, str]) -> Done | None:
        """The stage's finished results, when what they were computed from is what it would read now."""
        folder = self.results / stage.name
        marker = folder / "done.json"
        if not marker.is_file():
            return None
        try:
            record = checkpoints.read_json(marker)
        except ValueError as e:
            logging.warning("%s; stage %s runs again", e, stage.name)
            return None
        why = None
        if record.get("reads") != reads:
            why = f"the stages it reads changed ({record.get('reads')} -> {reads})"
        elif (now := self.context.current(record.get("config", {}))) != record.get("config"):
            why = "; ".join(f"{k} changed ({v!r} -> {now[k]!r})" for k, v in record["config"].items() if now[k] != v)
        else:
            for name, recorded in record.get("inputs", {}).items():
                try:
                    current = self.context.fingerprint(name)
                except Exception as e:  # noqa: BLE001 (an input that cannot be read is not the one recorded)
                    why = f"its input {name} cannot be read ({type(e).__name__}: {e})"
                    break
                if current != recorded:
                    why = f"its input {name} changed (content fingerprint {recorded[:12]} -> {current[:12]})"
                    break
        if why is None and stage.check is not None:
            why = stage.check(folder)
        if why is not None:
            logging.info("stage %s: runs again: %s", stage.name, why)
            return None
        return Done(record["key"], record["outputs"], ran=False)

    def _execute(self, stage: Stage, reads: dict[str, dict[str, Any]], keys: dict[str, str]) -> Done:
        """Run one stage in `.<stage>.partial`, then move it into place (all processes take part; process
        0 alone creates, renames and deletes)."""
        name, ctx = stage.name, self.context
        partial, old = (self.results / f".{name}.{part}" for part in ("partial", "old"))
        final = self.results / name
        primary = jax.process_index() == 0
        if primary:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        sharding.barrier(f"stage {name} started")
        logging.info("stage %s: running", name)
        with ctx.recording(count=False) as record:
            try:
                outputs = portable(stage.run(ctx, partial, reads), partial, name, self.results)
            except FloatingPointError as e:
                raise FloatingPointError(f"stage {name}: {e}") from e
        check_finite(outputs, f"stage {name}")
        self.ran.append(name)
        if "skipped" in outputs:
            logging.info("stage %s: skipped (%s), not recorded as done", name, outputs["skipped"])
            if primary:
                shutil.rmtree(partial, ignore_errors=True)
            sharding.barrier(f"stage {name} skipped")
            return Done("skipped: " + outputs["skipped"], outputs, ran=True)
        inputs = {n: ctx.fingerprint(n) for n in stage.inputs}
        made_from = {"reads": keys, "config": record.config, "inputs": inputs}
        key = hashlib.sha256(json.dumps({"stage": name, **made_from}, sort_keys=True).encode()).hexdigest()
        write_atomic(partial / "done.json", json.dumps({"key": key, **made_from, "outputs": outputs}, indent=1))
        sharding.barrier(f"stage {name} written")
        if primary:
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                final.rename(old)
            partial.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        sharding.barrier(f"stage {name} in place")  # later stages read its files on every process
        return Done(key, outputs, ran=True)


def portable(tree: Any, partial: Path, stage: str, results: Path) -> Any:
    """Outputs with every Path as a string relative to the results directory (files the stage wrote
    into `partial` under `stage/`)."""
    if isinstance(tree, dict):
        return {k: portable(v, partial, stage, results) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [portable(v, partial, stage, results) for v in tree]
    if isinstance(tree, Path):
        if tree.is_relative_to(partial):
            return f"{stage}/{tree.relative_to(partial).as_posix()}"
        return tree.relative_to(results).as_posix() if tree.is_relative_to(results) else str(tree)
    return tree


def check_finite(tree: Any, where: str) -> None:
    """FloatingPointError naming the first NaN or infinite number in `tree`."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            check_finite(v, f"{where}: {k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            check_finite(v, f"{where}[{i}]")
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise FloatingPointError(f"{where} is {tree}")
