"""Samplers: per-epoch order from (seed, epoch), disjoint rank shards, evaluation without duplicates."""
from src.distributed import DistInfo, EpochShuffleSampler, ShardSampler


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochShuffleSampler(list(range(50)), DistInfo(), seed=3), EpochShuffleSampler(list(range(50)), DistInfo(), 3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_ranks_split_an_epoch_evenly_and_cover_it():
    idx = list(range(100, 111))  # 11 items, 3 ranks: padded to 12
    shards = []
    for r in range(3):
        s = EpochShuffleSampler(idx, DistInfo(rank=r, world_size=3), seed=0)
        s.set_epoch(1)
        shards.append(list(s))
        assert len(s) == 4
    assert set(sum(shards, [])) == set(idx)


def test_eval_shards_have_no_duplicates():
    idx = list(range(10))
    shards = [list(ShardSampler(idx, DistInfo(rank=r, world_size=4))) for r in range(4)]
    flat = sum(shards, [])
    assert sorted(flat) == idx and len(flat) == len(set(flat))
