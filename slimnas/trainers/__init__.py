"""How good: data pipelines, supernet training with the paper's recipe, BN-recalibrated evaluation, Ray Train.

Public surface (torch-based; ``ray`` is imported only by :mod:`slimnas.trainers.ray_train`, MLflow never):

- configs: :class:`SupernetTrainConfig`, :class:`ArchTrainConfig` and their sections;
- :func:`train_supernet`, :func:`train_arch` -> :class:`Result`; :class:`Callback`, :class:`TrainState`;
- :func:`evaluate_arch`, :func:`evaluate_archs`, :class:`Evaluator`, :func:`recalibrate_bn`, :func:`count_correct`,
  :func:`evaluation_data` -> :class:`EvaluationData` (a search job's validation and calibration batches);
- :func:`build_data`, :func:`check_data`, :class:`DataBundle`, :class:`ParquetImageDataset`,
  :func:`write_parquet_shards`;
- checkpoints: :func:`load_checkpoint`, :func:`latest_checkpoint`, :data:`CHECKPOINT_FILE`;
- :class:`DistContext`; :func:`local_pretrained_file` (a timm model's weights in the local cache, if any).
"""

from __future__ import annotations

from slimnas._lazy import lazy_attributes

__all__ = [
    "SupernetTrainConfig", "ArchTrainConfig", "DataConfig", "AugmentConfig", "OptimConfig", "AlphaConfig",
    "GumbelConfig", "DistillConfig", "ModelConfig", "RunSettings", "DistributedConfig", "TrackingConfig",
    "train_supernet", "train_arch", "checkpoint_dir", "model_from_checkpoint", "Result", "Callback", "TrainState",
    "evaluate_arch", "evaluate_archs", "Evaluator", "recalibrate_bn", "count_correct", "EvaluationData",
    "evaluation_data", "build_data", "check_data", "DataBundle", "ParquetImageDataset", "write_parquet_shards",
    "load_checkpoint", "latest_checkpoint", "CHECKPOINT_FILE", "DistContext", "gumbel_tau", "local_pretrained_file",
]

_LAZY = {
    **{name: "._config" for name in ("SupernetTrainConfig", "ArchTrainConfig", "DataConfig", "AugmentConfig",
                                      "OptimConfig", "AlphaConfig", "GumbelConfig", "DistillConfig", "ModelConfig",
                                      "RunSettings", "DistributedConfig", "TrackingConfig")},
    "train_supernet": "._train", "train_arch": "._train", "checkpoint_dir": "._train",
    "model_from_checkpoint": "._train",
    "Result": "._callbacks", "Callback": "._callbacks", "TrainState": "._callbacks",
    "evaluate_arch": "._evaluate", "evaluate_archs": "._evaluate", "Evaluator": "._evaluate",
    "recalibrate_bn": "._evaluate", "count_correct": "._evaluate", "EvaluationData": "._evaluate",
    "evaluation_data": "._evaluate",
    "build_data": "._data", "check_data": "._data", "DataBundle": "._data",
    "ParquetImageDataset": "._parquet", "write_parquet_shards": "._parquet",
    "load_checkpoint": "._checkpoint", "latest_checkpoint": "._checkpoint", "CHECKPOINT_FILE": "._checkpoint",
    "DistContext": "._dist", "gumbel_tau": "._schedule", "local_pretrained_file": "._loss",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
