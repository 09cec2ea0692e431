"""A search job's winners saved as the networks it evaluated (:mod:`slimnas.winners` describes the files).

The job's evaluator actors score a candidate with :class:`~slimnas.trainers.Evaluator` (subnet extracted, BatchNorm
statistics re-estimated on the calibration images, top-1 on the validation images) and keep nothing. At the end of the
job the same evaluators build every winner's network again the same way, in parallel
(:meth:`~slimnas.platform.tune.evaluators.EvaluatorPool.networks`: the same supernet, data, code and thread count as
they evaluated with), score it again on the same images and hand back its state_dict; the driver saves it with its
model card. A saved network that scored otherwise than the job reports (which it should never do) is said in one line,
and its card holds what the saved network scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimnas._io import file_sha256
from slimnas.search_spaces import Arch
from slimnas.winners import ModelCard, save_winner, winner_folder, winner_name

__all__ = ["save_winners"]


def save_winners(results: Sequence[Any], job_dir: Path, *, networks: Callable[[list[dict[str, Any]]], list[Any]],
                 supernet: Any, checkpoint: str, table: Any, table_path: str,
                 echo: Callable[[str], None]) -> list[Path]:
    """Save every answered result of ``results`` (:class:`~slimnas.platform.stages.search.MethodResult`) under
    ``job_dir/winners/``; returns the folders written. ``networks(archs)``: each arch's network as the job evaluated
    it (:class:`~slimnas.platform.tune.trainable.EvaluatedNetwork`), one call for all of them."""
    import slimnas

    answered = [r for r in results if r.arch is not None]
    if not answered:
        return []
    digest = file_sha256(checkpoint)
    by_arch: dict[str, list[Any]] = {}
    for result in answered:
        by_arch.setdefault(Arch.from_dict(result.arch).to_json(), []).append(result)
    archs = [Arch.from_json(key) for key in by_arch]
    built = networks([arch.to_dict() for arch in archs])
    written = []
    for arch, group, network in zip(archs, by_arch.values(), built):
        top1 = network.correct / network.total
        for result in group:
            if result.top1 != top1:
                echo(f"[search] {winner_name(result.method, result.target_ms)}: the saved network scores top-1 "
                     f"{top1:.6f} on the evaluation images, the search reported {result.top1:.6f}")
            card = ModelCard(
                arch=arch, space=supernet.space.name, num_classes=int(supernet.num_classes),
                in_chans=int(getattr(supernet, "in_chans", 3)), method=result.method,
                target_ms=float(result.target_ms), top1=top1, eval_images=network.total,
                calib_images=network.calib_images, predicted_ms=result.predicted_ms, measured_ms=result.measured_ms,
                meets_target=result.meets_target, supernet_checkpoint=str(Path(checkpoint).resolve()),
                supernet_sha256=digest, latency_table=str(Path(table_path).resolve()),
                latency_backend=table.meta.backend, latency_device=table.meta.device,
                latency_table_created=table.meta.created, slimnas_version=slimnas.__version__)
            written.append(save_winner(winner_folder(job_dir, result.method, result.target_ms), network.state_dict,
                                       card))
    return written
