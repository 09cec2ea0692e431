"""``pipeline.json``'s stage records: frozen dataclasses with a JSON round trip; a malformed record is refused."""

import json
from dataclasses import FrozenInstanceError

import pytest

from slimnas.errors import InputError
from slimnas.platform.pipeline.record import (
    Attempt,
    PipelineRecord,
    RetrainedModel,
    RetrainRecord,
    SearchInputs,
    SearchRecord,
    TableRecord,
    TrainRecord,
)

INPUTS = SearchInputs({"supernet": "/a/ckpt.pt", "targets": [2.0, 1.0]}, "ab" * 32, "2026-01-01T00:00:00")
STAGES = {"train": TrainRecord("ran", 12.5, "/a/ckpt.pt", "ab" * 32),
          "table": TableRecord("built", 3.0, "/a/t.parquet", "2026-01-01T00:00:00", 144,
                               {"plain_all": {"n": 10, "kendall_tau": 0.9}}),
          "search": SearchRecord("ran", 40.0, INPUTS, (2.0, 1.0), "/a/search", "run-1"),
          "retrain": RetrainRecord("ran", 9.0, (RetrainedModel("slimming", 2.0, "ran", "/a/search/retrained/x",
                                                               "supernet", 1, 0.9, 0.95, 200, 8.5, "cd" * 32),),
                                   ("1 ms: no answer meets the target",))}


def test_stage_records_round_trip_through_pipeline_json(tmp_path):
    record = PipelineRecord("job", [Attempt("2026-01-01T00:00:00+0000", {"name": "job"}, status="finished",
                                            ended="2026-01-01T00:01:00+0000", stages=dict(STAGES))])
    path = record.save(tmp_path / "pipeline.json")
    data = json.loads(path.read_text())
    assert data["stages"]["search"]["inputs"]["supernet_sha256"] == "ab" * 32  # the file keeps its keys
    assert data["stages"]["search"]["targets"] == [2.0, 1.0] and data["stages"]["table"]["entries"] == 144
    assert data["stages"]["retrain"]["models"][0]["retrained_top1"] == 0.95
    loaded = PipelineRecord.load(path, "job")
    assert loaded == record and loaded.stages() == STAGES
    with pytest.raises(FrozenInstanceError):
        loaded.stages()["train"].status = "reused"


def test_search_inputs_compare_the_supernet_by_its_hash_not_its_path():
    moved = SearchInputs({**INPUTS.config, "supernet": "/b/ckpt.pt"}, INPUTS.supernet_sha256, INPUTS.table_created)
    assert INPUTS.same_as(moved) and not INPUTS.same_as(None)
    assert not INPUTS.same_as(SearchInputs(INPUTS.config, "cd" * 32, INPUTS.table_created))
    assert not INPUTS.same_as(SearchInputs({**INPUTS.config, "targets": [2.0]}, INPUTS.supernet_sha256,
                                           INPUTS.table_created))


@pytest.mark.parametrize("stages", [
    {"train": {"status": "ran"}},  # fields missing
    {"search": {**STAGES["search"].to_dict(), "inputs": "x"}},  # inputs not a mapping
    {"deploy": STAGES["train"].to_dict()},  # no such stage
    {"retrain": {**STAGES["retrain"].to_dict(), "models": {"a": 1}}},  # models not a list
    {"retrain": {**STAGES["retrain"].to_dict(), "models": [{"method": "slimming"}]}},  # a model's fields missing
    {"train": ["ran"]},
])
def test_a_malformed_stage_record_is_refused_in_one_line(tmp_path, stages):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps({"name": "job", "attempts": [{"started": None, "config": {}, "status": "finished",
                                                             "stages": stages}]}))
    with pytest.raises(InputError, match="output: .*pipeline.json is not a readable pipeline record"):
        PipelineRecord.load(path, "job")
