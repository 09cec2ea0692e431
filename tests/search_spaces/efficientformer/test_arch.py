import json

import pytest

from slimnas.search_spaces.efficientformer import Arch, SearchSpace


def test_presets_have_the_papers_depths_widths_and_mb3d_counts():
    l1, l3, l7 = (Arch.preset(n) for n in ("l1", "l3", "l7"))
    assert l1.widths == (48, 96, 224, 448) and l1.depths == (3, 2, 6, 4) and l1.num_3d == (0, 0, 0, 1)
    assert l3.widths == (64, 128, 320, 512) and l3.depths == (4, 4, 12, 6) and l3.num_3d == (0, 0, 0, 4)
    assert l7.widths == (96, 192, 384, 768) and l7.depths == (6, 6, 18, 8) and l7.num_3d == (0, 0, 0, 8)
    # padded with identities to L7's slots, so the l7 space contains all three
    assert l1.slots == (6, 6, 18, 8)
    assert all(SearchSpace.preset("l7").contains(a) for a in (l1, l3, l7))
    assert Arch.preset("l1", slots=None).slots == (3, 2, 6, 4)


def test_json_round_trip_and_hashable():
    arch = Arch.preset("l3")
    again = Arch.from_json(json.dumps(arch.to_dict()))
    assert again == arch and hash(again) == hash(arch)
    assert len({arch, again, Arch.preset("l1")}) == 2
    assert Arch.from_dict(json.loads(arch.to_json())) == arch


def test_identity_positions_change_the_slots_but_not_the_structure():
    a = Arch(64, (32, 32, 32, 32), (("4d", "id"), ("4d",), ("4d", "id", "3d"), ("3d",)))
    b = Arch(64, (32, 32, 32, 32), (("id", "4d"), ("4d",), ("id", "4d", "3d"), ("3d",)))
    assert a != b
    assert a.same_structure(b)
    assert [r.slot for r in a.active_blocks(0)] == [0] and [r.slot for r in b.active_blocks(0)] == [1]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(img_size=64, widths=(24, 32, 32, 32), blocks=(("4d",),) * 4), "widths[0]"),
        (dict(img_size=64, widths=(0, 32, 32, 32), blocks=(("4d",),) * 4), "widths[0]"),
        (dict(img_size=64, widths=(32, 32, 32), blocks=(("4d",),) * 4), "widths"),
        (dict(img_size=60, widths=(32,) * 4, blocks=(("4d",),) * 4), "img_size"),
        (dict(img_size=64, widths=(32,) * 4, blocks=(("4d",), ("5d",), ("4d",), ("4d",))), "blocks[1][0]"),
        (dict(img_size=64, widths=(32,) * 4, blocks=(("4d",), ("id", "id"), ("4d",), ("4d",))), "blocks[1]"),
        (dict(img_size=64, widths=(32,) * 4, blocks=(("4d",), ("4d",), ("4d",), ("3d", "4d"))), "blocks[3]"),
        (dict(img_size=64, widths=(32,) * 4, blocks=(("4d",), ("4d",), ("4d",), ("3d", "id", "4d"))), "blocks[3]"),
        (dict(img_size=64, widths=(32,) * 4, blocks=(("4d",),) * 3), "blocks"),
        (dict(img_size="64", widths=(32,) * 4, blocks=(("4d",),) * 4), "img_size"),
    ],
)
def test_invalid_archs_name_the_field(kwargs, field):
    with pytest.raises(ValueError) as err:
        Arch(**kwargs)
    assert str(err.value).startswith(field + ":")


def test_mb3d_suffix_may_be_interleaved_with_identities():
    arch = Arch(64, (32,) * 4, (("4d",), ("4d",), ("4d", "id", "3d", "id", "3d"), ("3d",)))
    assert arch.num_3d == (0, 0, 2, 1)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"img_size": 64, "widths": [32] * 4}, "blocks"),
        ({"img_size": 64, "widths": [32] * 4, "blocks": [["4d"]] * 4, "extra": 1}, "arch"),
        ({"img_size": 64, "widths": 32, "blocks": [["4d"]] * 4}, "widths"),
        ([1, 2], "arch"),
    ],
)
def test_from_dict_rejects_malformed_input(data, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        Arch.from_dict(data)
    with pytest.raises(ValueError, match="^arch: not valid JSON"):
        Arch.from_json("{nope")


def test_edits_are_validated():
    arch = Arch.preset("l1", slots=None)
    assert arch.with_width(0, 32).widths[0] == 32
    with pytest.raises(ValueError, match="widths"):
        arch.with_width(0, 40)
    with pytest.raises(ValueError, match="blocks\\[1\\]"):
        arch.with_kind(1, 0, "id").with_kind(1, 1, "id")
    with pytest.raises(ValueError, match="unknown preset"):
        Arch.preset("l9")
