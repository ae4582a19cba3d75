"""Each epoch visits the images in a new random order, the same for the same seed; processes split each batch."""

import pytest
import torch

from s2r2lib.train import TrainConfig, batch_indices


def epoch_batches(config, epoch, num_images, rank=0, world=1):
    per_epoch = num_images // config.images_per_batch
    return [batch_indices(config, epoch * per_epoch + position, num_images, rank, world)
            for position in range(per_epoch)]


@pytest.mark.parametrize("num_images", [64, 70])  # 70: 6 images left out of each epoch
def test_each_epoch_draws_batches_without_replacement(num_images):
    config = TrainConfig(images_per_batch=8, seed=3)
    for epoch in range(3):
        batches = epoch_batches(config, epoch, num_images)
        assert all(len(b) == 8 for b in batches)
        seen = torch.cat(batches)
        assert len(seen.unique()) == len(seen) == 8 * (num_images // 8), f"epoch {epoch} repeats an image"
        assert seen.min() >= 0 and seen.max() < num_images


def test_over_epochs_every_image_is_seen_and_the_left_out_ones_change():
    config = TrainConfig(images_per_batch=8, seed=3)
    seen = [set(torch.cat(epoch_batches(config, epoch, 70)).tolist()) for epoch in range(6)]
    assert set().union(*seen) == set(range(70))
    assert len({frozenset(range(70)) - s for s in seen}) > 1


def test_every_epoch_has_its_own_order_and_a_seed_fixes_it():
    config = TrainConfig(images_per_batch=8, seed=3)
    first, second = (torch.cat(epoch_batches(config, e, 64)) for e in (0, 1))
    assert not torch.equal(first, second)
    assert torch.equal(torch.sort(first).values, torch.sort(second).values)  # both a permutation of all 64
    assert not torch.equal(epoch_batches(config, 1, 64)[0], epoch_batches(config, 0, 64)[0])
    again = TrainConfig(images_per_batch=8, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(epoch_batches(config, 1, 64), epoch_batches(again, 1, 64)))
    other = TrainConfig(images_per_batch=8, seed=4)
    assert not torch.equal(torch.cat(epoch_batches(other, 0, 64)), first)


def test_an_epochs_order_is_random_not_the_identity():
    first = torch.cat(epoch_batches(TrainConfig(images_per_batch=8, seed=0), 0, 64))
    assert not torch.equal(first, torch.arange(64)) and not torch.equal(first, torch.arange(64).flip(0))


@pytest.mark.parametrize("world", [2, 4])
def test_processes_split_the_global_batch_in_rank_order(world):
    config = TrainConfig(images_per_batch=8, seed=5)
    for step in (0, 7, 9):
        whole = batch_indices(config, step, 64)
        parts = [batch_indices(config, step, 64, rank, world) for rank in range(world)]
        assert all(len(p) == 8 // world for p in parts)
        assert torch.equal(torch.cat(parts), whole)
