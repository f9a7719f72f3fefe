"""The P x K class-balanced batch sampler (data.sampler=pk): its batches, its determinism, its DDP shares."""

from __future__ import annotations

from collections import Counter

import pytest

from fgvc.data.sampler import ClassBalancedBatches, pk_shape
from fgvc.errors import UserError

# 6 classes of unequal sizes (5 to 15 images), labels interleaved as a real split's are not sorted
LABELS = [c for i in range(15) for c in range(6) if i < 5 + 2 * c]


def epoch_batches(sampler: ClassBalancedBatches, epoch: int) -> list[list[int]]:
    sampler.use_epoch(epoch)
    out = []
    for batch in sampler:
        assert all(e == epoch for e, _ in batch)  # the epoch travels with each key (per-sample seeding)
        out.append([i for _, i in batch])
    return out


def test_every_batch_holds_p_classes_of_k_distinct_images():
    sampler = ClassBalancedBatches(LABELS, classes=3, images=4, seed=0)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(LABELS) // 12 == len(sampler)
    for batch in batches:
        assert len(batch) == 12 and len(set(batch)) == 12
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}


def test_a_class_is_used_up_before_its_images_repeat():
    # two classes per batch out of two: each class's K-slices walk through its own shuffle
    labels = [0] * 6 + [1] * 6
    sampler = ClassBalancedBatches(labels, classes=2, images=3, seed=1)
    seen = [i for b in epoch_batches(sampler, 0) for i in b]
    assert sorted(seen) == list(range(12))


def draws(batches: list[list[int]], members: set[int]) -> list[set[int]]:
    """Each batch's images of one class (the batches are class by class, K of each)."""
    return [set(b) & members for b in batches if set(b) & members]


def test_a_rest_shorter_than_k_is_dropped_when_its_class_is_reshuffled():
    # class 0 has 3 images, K = 2: after one draw 1 image is left, and the class is reshuffled whole, so a
    # second draw can repeat the first pair (were the rest kept, it would always hold the image left over)
    labels = [0] * 3 + [1] * 9
    repeats = 0
    for seed in range(20):
        d = draws(epoch_batches(ClassBalancedBatches(labels, classes=2, images=2, seed=seed), 0), {0, 1, 2})
        assert len(d) == 3 and all(len(pair) == 2 for pair in d)  # every draw: K distinct images
        repeats += d[1] == d[0]
    assert repeats > 0


def test_each_epoch_starts_every_class_on_a_fresh_shuffle():
    # class 1 has 9 images and 3 draws of 2 an epoch: 3 images stay unused, and the next epoch does not
    # start with them (its first draw may repeat an image of the epoch before)
    labels = [0] * 3 + [1] * 9
    members = set(range(3, 12))
    repeats = 0
    for seed in range(20):
        sampler = ClassBalancedBatches(labels, classes=2, images=2, seed=seed)
        used = set().union(*draws(epoch_batches(sampler, 0), members))
        assert len(used) == 6  # within the epoch, the class's shuffle is not used up: 3 images unused
        repeats += bool(draws(epoch_batches(sampler, 1), members)[0] & used)
    assert repeats > 0


def test_same_seed_and_epoch_same_batches_and_other_epochs_or_seeds_differ():
    a = ClassBalancedBatches(LABELS, 3, 4, seed=0)
    b = ClassBalancedBatches(LABELS, 3, 4, seed=0)
    assert epoch_batches(a, 2) == epoch_batches(b, 2)
    assert epoch_batches(a, 2) != epoch_batches(a, 3)
    assert epoch_batches(ClassBalancedBatches(LABELS, 3, 4, seed=1), 2) != epoch_batches(a, 2)


def test_a_resumed_sampler_gives_an_uninterrupted_ones_batches():
    # a resumed run builds a fresh sampler and starts at its next epoch; nothing else carries over
    through = ClassBalancedBatches(LABELS, 3, 4, seed=7)
    uninterrupted = [epoch_batches(through, e) for e in range(4)]
    resumed = ClassBalancedBatches(LABELS, 3, 4, seed=7)
    assert [epoch_batches(resumed, e) for e in (2, 3)] == uninterrupted[2:]


def test_processes_take_turns_through_one_sequence_of_batches():
    world = 3
    shares = [ClassBalancedBatches(LABELS, 2, 2, seed=0, rank=r, world=world) for r in range(world)]
    one = ClassBalancedBatches(LABELS, 2, 2, seed=0)
    per_process = len(LABELS) // (2 * 2 * world)
    assert [len(s) for s in shares] == [per_process] * world  # every process takes the same number of steps
    got = [epoch_batches(s, 5) for s in shares]
    sequence = list(one.batches(5))
    for r in range(world):
        assert got[r] == sequence[r::world][:per_process]
    # no batch is trained twice in a step, and each is a full P x K batch
    assert len({tuple(b) for share in got for b in share}) == per_process * world


def test_a_class_with_fewer_than_k_images_is_refused_naming_it():
    labels = [0] * 5 + [1] * 2 + [2] * 5
    with pytest.raises(UserError, match=r"class 1 has 2 .*lower data.pk_images to 2"):
        ClassBalancedBatches(labels, 2, 3, seed=0)


def test_more_classes_per_batch_than_the_split_has_is_refused():
    with pytest.raises(UserError, match="data.pk_classes=7 .* has 6"):
        ClassBalancedBatches(LABELS, 7, 2, seed=0)


def test_a_split_smaller_than_one_batch_per_process_is_refused():
    with pytest.raises(UserError, match="fewer than one batch"):
        ClassBalancedBatches([0, 0, 1, 1], 2, 2, seed=0, world=2)


@pytest.mark.parametrize(("batch", "p", "k", "shape"), [(16, 0, 4, (4, 4)), (16, 8, 2, (8, 2)), (6, 0, 3, (2, 3))])
def test_p_defaults_to_the_batch_size_over_k(batch, p, k, shape):
    assert pk_shape(batch, p, k) == shape


@pytest.mark.parametrize(("batch", "p", "k", "fix"), [(10, 0, 4, "multiple of 4"), (16, 3, 4, "train.batch_size=12"),
                                                      (2, 0, 4, "multiple of 4")])
def test_a_batch_size_that_is_not_p_times_k_is_refused(batch, p, k, fix):
    with pytest.raises(UserError, match=fix):
        pk_shape(batch, p, k)
