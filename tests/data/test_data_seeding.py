"""Per-sample seeded augmentation: an image's random crop depends on (seed, epoch, index) only."""

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from fgvc.data.seeding import EpochSampler, PerSampleSeeded


class RandomPixels(Dataset):
    """Each item is torch.rand(3): a stand-in for a random transform."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return torch.rand(3), index


def _epoch(loader, sampler, epoch):
    sampler.use_epoch(epoch)
    return torch.cat([x for x, _ in loader])


def test_same_images_whatever_the_number_of_workers_and_new_ones_each_epoch():
    results = {}
    for workers in (0, 2):
        sampler = EpochSampler(SequentialSampler(range(6)))
        loader = DataLoader(PerSampleSeeded(RandomPixels(), seed=5), batch_size=4, sampler=sampler,
                            num_workers=workers, persistent_workers=workers > 0)
        results[workers] = [_epoch(loader, sampler, e) for e in (0, 1, 0)]
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[2]))
    first, second, first_again = results[0]
    assert torch.equal(first, first_again) and not torch.equal(first, second)


def test_the_callers_random_stream_is_untouched():
    data = PerSampleSeeded(RandomPixels(), seed=0)
    torch.manual_seed(1)
    expected = torch.rand(4)
    torch.manual_seed(1)
    data[(0, 3)]
    assert torch.equal(torch.rand(4), expected)


def test_epoch_sampler_passes_the_epoch_to_a_distributed_sampler():
    inner = torch.utils.data.DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=True, seed=0)
    sampler = EpochSampler(inner)
    sampler.use_epoch(3)
    assert inner.epoch == 3 and [e for e, _ in sampler] == [3] * 5
