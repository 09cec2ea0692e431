"""A search job's winners saved as the networks it evaluated (:mod:`slimnas.winners` describes the files).

The Tune workers score a candidate with :class:`~slimnas.trainers.Evaluator` (subnet extracted, BatchNorm statistics
re-estimated on the calibration images, top-1 on the validation images), keep nothing and hand back a number. At the
end of the job the driver rebuilds that network for every winner the same way: the same evaluation data
(:func:`~slimnas.trainers.evaluation_data`), the same code (:meth:`Evaluator.calibrated
<slimnas.trainers.Evaluator.calibrated>`), on one thread as the workers run; scores it again on the same images and
saves it with its model card. A saved network that scored otherwise than the job reports (which it should never do)
is said in one line, and its card holds what the saved network scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimnas._io import file_sha256
from slimnas._threads import torch_threads
from slimnas.search_spaces import Arch
from slimnas.winners import ModelCard, save_winner, winner_folder, winner_name

__all__ = ["save_winners"]


def save_winners(results: Sequence[Any], job_dir: Path, *, supernet: Any, checkpoint: str, data: Any,
                 eval_images: int | None, table: Any, table_path: str,
                 echo: Callable[[str], None]) -> list[Path]:
    """Save every answered result of ``results`` (:class:`~slimnas.platform.stages.search.MethodResult`) under
    ``job_dir/winners/``; returns the folders written. ``data``/``eval_images``: the job's evaluation settings."""
    import slimnas
    from slimnas.trainers import Evaluator, count_correct, evaluation_data

    answered = [r for r in results if r.arch is not None]
    if not answered:
        return []
    batches = evaluation_data(data, supernet.space.img_size, eval_images)
    evaluator = Evaluator(supernet, batches.val, batches.calib)
    calib_images = sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in batches.calib)
    digest = file_sha256(checkpoint)
    by_arch: dict[str, list[Any]] = {}
    for result in answered:
        by_arch.setdefault(Arch.from_dict(result.arch).to_json(), []).append(result)
    written = []
    for key, group in by_arch.items():
        arch = Arch.from_json(key)
        with torch_threads(1):  # as in the evaluation workers (the same kernels, the same sums)
            model = evaluator.calibrated(arch)
            correct, total = count_correct(model, batches.val)
        top1 = correct / total
        state = model.state_dict()
        for result in group:
            if result.top1 != top1:
                echo(f"[search] {winner_name(result.method, result.target_ms)}: the saved network scores top-1 "
                     f"{top1:.6f} on the evaluation images, the search reported {result.top1:.6f}")
            card = ModelCard(
                arch=arch, space=supernet.space.name, num_classes=int(supernet.num_classes),
                in_chans=int(getattr(supernet, "in_chans", 3)), method=result.method,
                target_ms=float(result.target_ms), top1=top1, eval_images=total, calib_images=calib_images,
                predicted_ms=result.predicted_ms, measured_ms=result.measured_ms, meets_target=result.meets_target,
                supernet_checkpoint=str(Path(checkpoint).resolve()), supernet_sha256=digest,
                latency_table=str(Path(table_path).resolve()), latency_backend=table.meta.backend,
                latency_device=table.meta.device, latency_table_created=table.meta.created,
                slimnas_version=slimnas.__version__)
            written.append(save_winner(winner_folder(job_dir, result.method, result.target_ms), state, card))
    return written
