import itertools
import random
from collections import Counter

import pytest

from slimnas.search_spaces.efficientformer import Arch, SearchSpace


@pytest.mark.parametrize("name", ["tiny", "l7", "l1"])
@pytest.mark.parametrize("per_slot", [False, True])
def test_samples_are_valid_and_contained(name, per_slot):
    space = SearchSpace.preset(name)
    rng = random.Random(1)
    for _ in range(300):
        arch = space.sample(rng, per_slot=per_slot)
        assert space.contains(arch)
        assert Arch.from_dict(arch.to_dict()) == arch  # re-validates


def test_max_arch_is_contained_and_maximal():
    space = SearchSpace.preset("l7")
    top = space.max_arch()
    assert space.contains(top) and top.widths == space.max_widths and top.depths == space.slots
    assert top.num_3d == (0, 0, 0, 8)


def _enumerate(space):
    """Every valid arch of a (small) space, by brute force."""
    per_stage = []
    for s in range(4):
        seqs = []
        for seq in itertools.product(space.kinds[s], repeat=space.slots[s]):
            try:
                Arch(space.img_size, (16,) * 4, tuple(seq if i == s else ("4d",) for i in range(4)))
            except ValueError:
                continue
            seqs.append(seq)
        per_stage.append(seqs)
    return per_stage


def test_num_archs_matches_brute_force_and_sampling_is_uniform():
    space = SearchSpace(name="small", img_size=32, max_widths=(16, 16, 32, 16), slots=(2, 1, 3, 2))
    stages = _enumerate(space)
    expected = 2 * 1 * 1 * 1  # width choices: stage 3 has {16, 32}
    for seqs in stages:
        expected *= len(seqs)
    assert space.num_archs() == expected
    # Uniform over archs: stage 3 (3 slots, {4d,3d,id}) has 3*2 + 3*3 + 1*4 = 19 valid sequences.
    assert len(stages[2]) == 19
    rng = random.Random(0)
    n = 19 * 400
    counts = Counter(space.sample(rng).blocks[2] for _ in range(n))
    assert set(counts) == set(stages[2])
    chi2 = sum((c - n / 19) ** 2 / (n / 19) for c in counts.values())
    assert chi2 < 45  # 18 degrees of freedom: p ~ 0.0005


def test_check_names_the_field_outside_the_space():
    space = SearchSpace.preset("tiny")
    arch = space.max_arch()
    with pytest.raises(ValueError, match="^img_size"):
        space.check(Arch(128, arch.widths, arch.blocks))
    with pytest.raises(ValueError, match=r"^widths\[3\]"):
        space.check(arch.with_width(3, 144))
    with pytest.raises(ValueError, match=r"^blocks\[0\]\[1\]"):
        space.check(Arch(64, arch.widths, (("4d", "3d"),) + arch.blocks[1:]))
    with pytest.raises(ValueError, match=r"^blocks\[1\]"):
        space.check(Arch(64, arch.widths, (arch.blocks[0], ("4d",)) + arch.blocks[2:]))
    assert not SearchSpace.preset("l1").contains(Arch.preset("l1"))  # 18 slots in stage 3, the l1 space has 6
    assert SearchSpace.preset("l1").contains(Arch.preset("l1", slots=(3, 2, 6, 4)))


def test_space_round_trip_and_bad_fields():
    space = SearchSpace.preset("tiny")
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="max_widths"):
        SearchSpace(name="x", img_size=64, max_widths=(30, 64, 96, 128), slots=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"kinds\[2\]"):
        SearchSpace(name="x", img_size=64, max_widths=(32,) * 4, slots=(1,) * 4,
                    kinds=(("4d",), ("4d",), ("5d",), ("4d",)))
    with pytest.raises(ValueError, match="unknown field"):
        SearchSpace.from_dict({**space.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        SearchSpace.preset("huge")
