import numpy as np
import pytest

from umlbench.data.samplers import (ClassUniqueSampler, DatasetClassBalancedSampler,
                                    UniformSampler, make_sampler)
from umlbench.errors import UserError


def test_uniform_covers_each_image_once_per_epoch():
    s = UniformSampler(100, 10, seed=1)
    batches = list(s)
    idx = [i for b in batches for i, _ in b]
    assert len(idx) == 100 and sorted(idx) == list(range(100))


def test_same_global_batches_for_any_world_size():
    one = UniformSampler(64, 16, seed=3)
    two = [UniformSampler(64, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for s in [one, *two]:
            s.set_epoch(epoch)
        merged = [a + b for a, b in zip(*[list(s) for s in two])]
        assert merged == list(one)  # indices and augmentation seeds identical


def test_epochs_differ_and_are_reproducible():
    s = UniformSampler(50, 10, seed=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1


def test_class_unique_batches():
    labels = np.repeat(np.arange(30), 5)
    s = ClassUniqueSampler(labels, 24, 4, seed=0)
    for batch in s:
        lab = labels[[i for i, _ in batch]]
        classes, counts = np.unique(lab, return_counts=True)
        assert len(classes) == 6 and (counts == 4).all()


def test_dataset_class_balanced():
    labels = np.concatenate([np.repeat(np.arange(10), 3), np.repeat(np.arange(10, 60), 3)])
    groups = np.array([0] * 30 + [1] * 150)
    s = DatasetClassBalancedSampler(labels, groups, 16, 2, seed=0)
    for batch in s:
        g = groups[[i for i, _ in batch]]
        assert (g == 0).sum() == (g == 1).sum() == 8


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        make_sampler("unique", np.arange(100), np.zeros(100), 30, 4)
    with pytest.raises(UserError):
        make_sampler("nope", np.arange(100), np.zeros(100), 30, 0)
    with pytest.raises(UserError, match="divisible"):
        UniformSampler(100, 30, world_size=4)
