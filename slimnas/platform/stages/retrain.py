"""The pipeline's retrain stage: the search job's winners trained again, their top-1 measured as the search measured it.

After the search, the winners the ``retrain`` section chooses (:func:`choose_winners`: ``best`` per target, or the
winners of some methods at every target) are each trained with :func:`slimnas.trainers.train_arch` (in this process,
or on Ray Train), from the winner's saved network (``init: supernet``: the supernet's weights with the BatchNorm
statistics recalibrated for the subnet, exactly what the search evaluated) or from scratch. The retrained network's
top-1 is measured on the search job's own validation images (:func:`slimnas.trainers.evaluation_data` of the job's
data and ``eval_images``) with its own BatchNorm statistics, next to the winner's supernet-weight top-1.

Each retrained winner is saved in ``<job>/retrained/<method>@<target>ms/`` with the files of a winner
(:mod:`slimnas.winners`: ``weights.pt``, ``arch.json``, ``model.json`` with ``retrained_top1``, ``retrain_init`` and
``retrain_epochs``), so that :func:`slimnas.load_winner` loads it, plus ``retrain.json`` (its inputs and the
training's per-epoch history). Writing is staged (:class:`~slimnas.platform.runtime.staging.StagedFolder`): the
training runs in ``<name>.staging/`` (its epoch checkpoints in ``<name>.staging/<name>/``), which replaces the folder
only once complete (``model.json`` written last), so a folder is always a whole retrained winner. A killed stage
resumes each winner's training from its last epoch checkpoint when the inputs are the same, and starts it over
otherwise.

A winner is *reused* (not trained again) when its folder holds a retrained winner whose inputs are those wanted now:
the SHA-256 of the winner's ``weights.pt`` and the training settings (everything but where files go and where it
runs), recorded as ``key`` in ``retrain.json``. A new search replaces the job folder, retrained winners included.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimnas._io import atomic_write_text, file_sha256
from slimnas.errors import InputError
from slimnas.platform.pipeline.record import RetrainedModel, RetrainRecord
from slimnas.platform.runtime.staging import SETTINGS_FILE, StagedFolder
from slimnas.progress import Echo
from slimnas.winners import CARD_FILE, WEIGHTS_FILE, ModelCard, save_winner, winner_folder, winner_name

if TYPE_CHECKING:
    from slimnas.platform.pipeline.config import PipelineConfig
    from slimnas.platform.stages.search import MethodResult, SearchJobResult
    from slimnas.trainers import ArchTrainConfig, EvaluationData

__all__ = ["choose_winners", "retrain_winners", "retrain_text", "retrained_folder", "RETRAINED_DIR", "RETRAIN_FILE"]

#: The retrained winners' folder, inside the search job's folder.
RETRAINED_DIR = "retrained"
#: A retrained winner's inputs and training history, beside its model card.
RETRAIN_FILE = "retrain.json"
_FORMAT = "slimnas.retrain/1"
#: Training settings that do not change the retrained network (where files go, progress output).
_NEUTRAL_RUN = ("name", "out_dir", "resume", "keep_checkpoints", "log_every")


def retrained_folder(job_dir: str | Path, method: str, target_ms: float) -> Path:
    """Where the retrain stage saves the (method, target) winner of the search job in ``job_dir``."""
    return Path(job_dir) / RETRAINED_DIR / winner_name(method, target_ms)


def choose_winners(results: Sequence[MethodResult], methods: list[str] | None) -> tuple[list[MethodResult], list[str]]:
    """The results whose winners are retrained, and a note per chosen (method, target) that has none.

    ``methods`` ``None``: per target, the best answer (the comparison's ``*``: the highest top-1 among the answers
    that meet the target; on a tie, the first method in the job's order). Else each named method's answers at every
    target."""
    from slimnas.platform.stages.comparison import BEST, best_marks

    chosen: list[MethodResult] = []
    notes: list[str] = []
    if methods is None:
        marks = best_marks(results)
        for target in dict.fromkeys(r.target_ms for r in results):
            best = next((r for r, mark in zip(results, marks) if r.target_ms == target and mark == BEST), None)
            if best is None:
                notes.append(f"{target:g} ms: no answer meets the target")
            else:
                chosen.append(best)
        return chosen, notes
    for r in results:
        if r.method in methods:
            if r.arch is None:
                notes.append(f"{winner_name(r.method, r.target_ms)}: no answer")
            else:
                chosen.append(r)
    return chosen, notes


def _settings(tcfg: ArchTrainConfig, winner_sha256: str, job_config: dict[str, Any]) -> dict[str, Any]:
    """What a retrained winner depends on (JSON round trip): the training settings but where files go, the winner's
    weights (by SHA-256, not path: a copied output folder keeps its retrained winners) and the evaluation images."""
    config = tcfg.model_dump(mode="json", exclude={"tracking", "weights"})
    config["run"] = {k: v for k, v in config["run"].items() if k not in _NEUTRAL_RUN}
    config["distributed"] = {k: config["distributed"][k] for k in ("enabled", "num_workers")}
    config["data"] = {k: v for k, v in config["data"].items() if k not in ("workers", "eval_batch_size")}
    evaluation = {"data": job_config.get("data"), "eval_images": job_config.get("eval_images")}
    return json.loads(json.dumps({"train": config, "winner_sha256": winner_sha256, "evaluation": evaluation}))


def _key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _stored(final: Path) -> tuple[dict[str, Any], ModelCard] | None:
    """The ``retrain.json`` and card of a complete retrained winner in ``final`` (``None``: none, or unreadable)."""
    try:
        info = json.loads((final / RETRAIN_FILE).read_text())
        card = ModelCard.load(final / CARD_FILE)
    except (OSError, ValueError, InputError):
        return None
    if not isinstance(info, dict) or info.get("format") != _FORMAT or card.retrained_top1 is None:
        return None
    return info, card


def _record(result: MethodResult, status: str, final: Path, card: ModelCard, wall_s: float,
            key: str) -> RetrainedModel:
    return RetrainedModel(result.method, float(result.target_ms), status, str(final), str(card.retrain_init),
                          int(card.retrain_epochs or 0), float(card.top1), float(card.retrained_top1 or 0.0),
                          int(card.eval_images), round(wall_s, 3), key)


@dataclass
class _Trained:
    """A network trained in this stage (shared by winners whose inputs are identical)."""

    state: dict[str, Any]
    top1: float
    images: int
    history: list[dict[str, float]]


def _winner(job_dir: Path, result: MethodResult) -> tuple[Path, ModelCard]:
    """A chosen winner's saved folder and card (one line naming the missing file otherwise)."""
    source = winner_folder(job_dir, result.method, result.target_ms)
    try:
        card = ModelCard.load(source / CARD_FILE)
        if not (source / WEIGHTS_FILE).is_file():
            raise InputError(f"{source / WEIGHTS_FILE}: no such file")
    except InputError as exc:  # e.g. a search job of an earlier slimnas, which saved no winners
        raise InputError(f"retrain: {exc} (a search job saves every winner there; --force search makes them "
                         f"again)") from None
    return source, card


class _Retrainer:
    """Retrains the chosen winners of one search job, one after another (see :func:`retrain_winners`); the
    evaluation images are built once, and a network is trained once for winners whose inputs are identical."""

    def __init__(self, cfg: PipelineConfig, job: SearchJobResult, job_dir: Path, force: bool, echo: Echo) -> None:
        self.cfg, self.job, self.job_dir, self.force, self.echo = cfg, job, job_dir, force, echo
        self.evaluation: EvaluationData | None = None
        self.trained: dict[str, _Trained] = {}

    def __call__(self, result: MethodResult) -> RetrainedModel:
        name = winner_name(result.method, result.target_ms)
        source, card = _winner(self.job_dir, result)
        weights = source / WEIGHTS_FILE
        final = retrained_folder(self.job_dir, result.method, result.target_ms)
        folder = StagedFolder(final, CARD_FILE)
        folder.settle()
        tcfg = self.cfg.retrain_config(card.arch.to_dict(), str(weights.resolve()), folder.staging.resolve() / name)
        settings = _settings(tcfg, file_sha256(weights), self.job.config)
        key = _key(settings)
        stored = None if self.force else _stored(final)
        if stored is not None and stored[0].get("key") == key:
            if folder.has_staged_run():  # a killed --force retrain: the current folder stands
                self.echo(f"[retrain] {name}: discarding the unfinished retraining in {folder.staging}")
                shutil.rmtree(folder.staging)
            self.echo(f"[retrain] {name}: reusing {final} (top-1 {card.top1:.4f} -> {stored[1].retrained_top1:.4f})")
            return _record(result, "reused", final, stored[1], float(stored[0].get("wall_s", 0.0)), key)
        start = time.perf_counter()
        if folder.has_staged_run() and (self.force or folder.staged_settings() != settings):
            self.echo(f"[retrain] {name}: discarding the unfinished retraining in {folder.staging} (other inputs)")
            shutil.rmtree(folder.staging)
        folder.begin(settings, restore=True, echo=self.echo)  # continues a killed run of the same inputs
        done = self.trained.get(key) or self._train(tcfg, name, final, card.img_size)
        self.trained[key] = done
        new_card = replace(card, retrained_top1=done.top1, retrain_init=self.cfg.retrain.init,
                           retrain_epochs=tcfg.run.epochs)
        wall = time.perf_counter() - start
        info = {"format": _FORMAT, "key": key, "settings": settings, "winner": str(source), "wall_s": round(wall, 3),
                "history": done.history}
        atomic_write_text(folder.staging / RETRAIN_FILE, json.dumps(info, indent=1) + "\n")
        shutil.rmtree(folder.staging / name, ignore_errors=True)  # the epoch checkpoints: not part of the model
        (folder.staging / SETTINGS_FILE).unlink(missing_ok=True)  # in retrain.json (without it: a restart redoes)
        save_winner(folder.staging, done.state, new_card)  # the card last: the staged folder is complete
        folder.commit()
        self.echo(f"[retrain] {name}: top-1 {card.top1:.4f} (supernet weights) -> {done.top1:.4f} (retrained) on "
                  f"{done.images} validation images")
        return _record(result, "ran", final, new_card, wall, key)

    def _train(self, tcfg: ArchTrainConfig, name: str, final: Path, img_size: int) -> _Trained:
        """Train (resuming a killed run in ``tcfg``'s run folder), then top-1 on the search's validation images."""
        from slimnas.platform.stages.training import TrainProgress, run_training
        from slimnas.trainers import count_correct, evaluation_data

        how = "fine-tuning the winner's network" if self.cfg.retrain.init == "supernet" else "training from scratch"
        self.echo(f"[retrain] {name}: {how}, {tcfg.run.epochs} epoch(s) -> {final}")
        result = run_training(tcfg, progress=False,
                              callback_factories=[functools.partial(TrainProgress, "retrain", self.echo)])
        if self.evaluation is None:
            config = self.job.config
            self.evaluation = evaluation_data(config["data"], img_size, config.get("eval_images"))
        model = result.model.eval()
        correct, total = count_correct(model, self.evaluation.val)
        return _Trained(model.state_dict(), correct / max(total, 1), total, list(result.history))


def retrain_winners(cfg: PipelineConfig, job: SearchJobResult, job_dir: Path, force: bool,
                    echo: Echo) -> RetrainRecord:
    """Retrain (or reuse) the winners ``cfg.retrain`` chooses among ``job``'s (see the module docstring); returns
    the stage's record (``wall_s`` 0: the caller times the stage). ``force``: train every one again."""
    chosen, notes = choose_winners(job.results, cfg.retrain.methods())
    for line in notes:
        echo(f"[retrain] {line}: nothing to retrain")
    retrain = _Retrainer(cfg, job, job_dir, force, echo)
    models = [retrain(result) for result in chosen]
    status = "ran" if any(m.status == "ran" for m in models) else "reused"
    return RetrainRecord(status, 0.0, tuple(models), tuple(notes))


def retrain_text(record: RetrainRecord) -> str:
    """The retrained winners as a short table: method, target, top-1 with the supernet's weights -> retrained."""
    if not record.models:
        return "retrained:     none" + (f" ({'; '.join(record.notes)})" if record.notes else "")
    first = record.models[0]
    how = {"supernet": "fine-tuned from the winners' networks", "scratch": "trained from scratch"}.get(first.init,
                                                                                                     first.init)
    lines = [f"retrained ({how}; top-1 on {first.images} validation images, as in the search):",
             f"  {'method':18s} {'target':>7s} {'epochs':>6s} {'top-1 supernet':>14s} -> {'retrained':>9s}  folder"]
    for m in record.models:
        lines.append(f"  {m.method:18s} {m.target_ms:7.2f} {m.epochs:6d} {m.top1:14.4f} -> {m.retrained_top1:9.4f}  "
                     f"{m.folder}")
    lines += [f"  {note}: not retrained" for note in record.notes]
    return "\n".join(lines)
