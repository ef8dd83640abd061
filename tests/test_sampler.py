from collections import Counter

import pytest

from reidmodel.data import IdentitySampler

# 6 identities with 1..8 images; two unclustered samples (-1) that must never be drawn.
LABELS = [0] * 8 + [1] * 5 + [2] * 4 + [3] * 3 + [4] * 1 + [5] * 6 + [-1, -1]


def _batches(indices, batch_size):
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def test_batches_hold_p_identities_with_k_each():
    sampler = IdentitySampler(LABELS, batch_size=8, num_instances=4, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) % 8 == 0 and indices
        for batch in _batches(indices, 8):
            counts = Counter(LABELS[i] for i in batch)
            assert sorted(counts.values()) == [4, 4]
            assert -1 not in counts


def test_len_is_number_of_indices():
    sampler = IdentitySampler(LABELS, batch_size=8, num_instances=4, seed=1)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        expected = len(sampler)
        assert len(list(sampler)) == expected


def test_small_identities_sampled_with_replacement():
    sampler = IdentitySampler(LABELS, batch_size=12, num_instances=4, seed=0)
    seen_single = False
    for epoch in range(10):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        if 20 in indices:  # the single image of identity 4
            assert indices.count(20) == 4
            seen_single = True
        # Identity 0 has 8 images = 2 chunks of 4 distinct indices.
        assert all(indices.count(i) <= 1 for i in range(8))
    assert seen_single


def test_deterministic_per_seed_and_epoch():
    a = IdentitySampler(LABELS, 8, 4, seed=5)
    b = IdentitySampler(LABELS, 8, 4, seed=5)
    assert list(a) == list(b)  # epoch 0 for both
    assert list(a) != list(IdentitySampler(LABELS, 8, 4, seed=5))  # a advanced to epoch 1
    a.set_epoch(7)
    b.set_epoch(7)
    assert list(a) == list(b)
    orders = {tuple(IdentitySampler(LABELS, 8, 4, seed=s)) for s in range(5)}
    assert len(orders) > 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="not a multiple of num_instances=4"):
        IdentitySampler(LABELS, batch_size=10, num_instances=4)
    with pytest.raises(ValueError, match="only 6 identities"):
        IdentitySampler(LABELS, batch_size=28, num_instances=4)


def test_max_batches_keeps_the_epochs_first_batches():
    full = list(IdentitySampler(LABELS, 8, 4, seed=3))
    capped = IdentitySampler(LABELS, 8, 4, seed=3, max_batches=1)
    assert len(capped) == 8 and list(capped) == full[:8]
