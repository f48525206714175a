"""tfzoo.ops.sampling: balanced sampling counts and randomness, SSD hard-negative mining."""
import numpy as np
import pytest
import tensorflow as tf

from tfzoo.ops.matcher import BACKGROUND, IGNORE
from tfzoo.ops.sampling import hard_negative_mining, sample_balanced, sample_balanced_indices, sampling_seed


def make_labels(rng, num_pos, num_neg, num_ignore):
    labels = np.array([3] * num_pos + [BACKGROUND] * num_neg + [IGNORE] * num_ignore, np.int32)
    return rng.permutation(labels)


@pytest.mark.parametrize(
    "num_pos, num_neg, expected_pos, expected_neg",
    [
        (300, 5000, 128, 128),  # plenty of both: RPN 256 @ 0.5
        (20, 5000, 20, 236),  # few positives: negatives fill the rest
        (300, 50, 128, 50),  # few negatives: positives keep their share (detectron2)
        (0, 10, 0, 10),  # fewer candidates than samples: take them all
        (0, 0, 0, 0),  # nothing to sample
    ],
)
def test_counts_follow_subsample_labels(rng, num_pos, num_neg, expected_pos, expected_neg):
    labels = make_labels(rng, num_pos, num_neg, 100)
    mask = sample_balanced(labels, 256, 0.5, seed=1, step=0).numpy()
    assert mask.shape == labels.shape and mask.dtype == bool
    assert np.sum(mask & (labels >= 0)) == expected_pos
    assert np.sum(mask & (labels == BACKGROUND)) == expected_neg
    assert not np.any(mask & (labels == IGNORE))


def test_fast_rcnn_setting_and_total_is_min_of_budget_and_available(rng):
    labels = make_labels(rng, 50, 1900, 50)
    mask = sample_balanced(labels, 128, 0.25, seed=3, step=0).numpy()
    assert np.sum(mask & (labels >= 0)) == 32
    assert mask.sum() == 128 == min(128, 50 + 1900)


def test_batched_rows_are_sampled_independently(rng):
    labels = np.stack([make_labels(rng, 10, 100, 0), make_labels(rng, 100, 3, 7)])  # [B, N]
    mask = sample_balanced(labels, 16, 0.5, seed=0, step=0).numpy()
    assert mask.shape == (2, 110)
    np.testing.assert_array_equal((mask & (labels >= 0)).sum(-1), [8, 8])
    np.testing.assert_array_equal((mask & (labels == BACKGROUND)).sum(-1), [8, 3])
    assert not np.any(mask & (labels == IGNORE))


def test_seeded_is_deterministic_per_step_and_uniform(rng):
    labels = make_labels(rng, 40, 400, 0)
    first = sample_balanced(labels, 64, 0.25, seed=7, step=0).numpy()
    np.testing.assert_array_equal(first, sample_balanced(labels, 64, 0.25, seed=7, step=0).numpy())
    # Another step (or seed) draws other candidates: an int seed alone no longer repeats them.
    assert not np.array_equal(first, sample_balanced(labels, 64, 0.25, seed=7, step=1).numpy())
    assert not np.array_equal(first, sample_balanced(labels, 64, 0.25, seed=8, step=0).numpy())
    np.testing.assert_array_equal(
        sample_balanced(labels, 64, 0.25, seed=sampling_seed(7, 0)).numpy(), first)  # a [2] seed made per call
    with pytest.raises(ValueError, match="an int seed \\(7\\) draws the same samples at every call.*step="):
        sample_balanced(labels, 64, 0.25, seed=7)
    with pytest.raises(ValueError, match="step needs a seed"):
        sample_balanced(labels, 64, 0.25, step=3)
    # Over many steps of one seed every positive is drawn about equally often (16 of 40 each time).
    hits = sum(sample_balanced(labels, 64, 0.25, seed=7, step=t).numpy().astype(int) for t in range(200))
    freq = hits[labels >= 0] / 200
    np.testing.assert_allclose(freq, 16 / 40, atol=0.15)
    unseeded = sample_balanced(labels, 64, 0.25).numpy()
    assert unseeded.sum() == 64


def test_sampling_seed_folds_keys():
    base = sampling_seed(7).numpy()
    np.testing.assert_array_equal(base, [7, 0])
    np.testing.assert_array_equal(sampling_seed(tf.constant([7, 0])).numpy(), base)
    a, b = sampling_seed(7, 3, 0).numpy(), sampling_seed(7, 3, 1).numpy()
    assert a.shape == (2,) and not np.array_equal(a, b) and not np.array_equal(a, base)
    np.testing.assert_array_equal(sampling_seed(7, tf.constant(3), 0).numpy(), a)


def test_indices_are_the_mask_positives_first_then_padding(rng):
    labels = np.stack([make_labels(rng, 10, 100, 5), make_labels(rng, 2, 3, 110), make_labels(rng, 0, 0, 115)])
    indices, valid = sample_balanced_indices(labels, 16, 0.25, seed=4, step=2)
    mask = sample_balanced(labels, 16, 0.25, seed=4, step=2).numpy()
    indices, valid = indices.numpy(), valid.numpy()
    assert indices.shape == valid.shape == (3, 16) and indices.dtype == np.int32
    np.testing.assert_array_equal(valid.sum(-1), [16, 5, 0])
    for row in range(3):
        picked = indices[row][valid[row]]
        assert sorted(picked) == sorted(np.flatnonzero(mask[row]))  # the same draw as the mask
        is_pos = labels[row][picked] >= 0
        assert list(is_pos) == sorted(is_pos, reverse=True)  # positives first
        assert (indices[row][~valid[row]] == 0).all()  # padding slots point at 0
    np.testing.assert_array_equal((labels[0][indices[0]] >= 0).sum(), 4)  # 16 * 0.25


def np_hard_negatives(loss, positive, negative, ratio, min_negatives):
    out = np.zeros_like(positive)
    for b in range(loss.shape[0]):
        candidates = np.flatnonzero(negative[b] & ~positive[b])
        k = min(max(int(np.floor(ratio * positive[b].sum())), min_negatives), len(candidates))
        order = candidates[np.argsort(-loss[b, candidates], kind="stable")]
        out[b, order[:k]] = True
    return out


def test_hard_negative_mining_matches_reference(rng):
    loss = rng.uniform(size=(4, 200)).astype(np.float32)
    positive = rng.uniform(size=(4, 200)) < np.array([[0.05], [0.0], [0.3], [0.02]])
    negative = ~positive & (rng.uniform(size=(4, 200)) > 0.1)
    got = hard_negative_mining(loss, positive, negative, neg_pos_ratio=3.0, min_negatives=5).numpy()
    np.testing.assert_array_equal(got, np_hard_negatives(loss, positive, negative, 3.0, 5))
    assert not np.any(got & positive)
    assert got[1].sum() == 5  # no positives: min_negatives
    np.testing.assert_array_equal(got[0].sum(), min(3 * positive[0].sum(), (negative[0]).sum()))


def test_hard_negative_mining_picks_highest_losses_and_default_candidates():
    loss = np.array([[0.1, 5.0, 0.3, 9.0, 0.2, 4.0, 0.0, 0.0]], np.float32)
    positive = np.array([[False, False, False, True, False, False, False, False]])
    got = hard_negative_mining(loss, positive, neg_pos_ratio=2.0).numpy()
    # Anchor 3 is positive (highest loss) and excluded; the two hardest negatives remain.
    np.testing.assert_array_equal(np.flatnonzero(got[0]), [1, 5])
    # Exactly k selected even with tied losses.
    tied = hard_negative_mining(np.zeros([1, 10]), np.eye(1, 10, dtype=bool), neg_pos_ratio=3.0).numpy()
    assert tied.sum() == 3


def test_hard_negative_mining_has_no_gradient_and_handles_empty():
    assert hard_negative_mining(tf.zeros([2, 0]), tf.zeros([2, 0], tf.bool)).shape == (2, 0)
    none = hard_negative_mining(np.ones([2, 6], np.float32), np.zeros([2, 6], bool)).numpy()
    assert not none.any()  # no positives, min_negatives 0


def test_in_graph_and_dataset(three_ways, rng):
    labels = np.stack([make_labels(rng, 30, 300, 20), make_labels(rng, 0, 350, 0)])
    loss = rng.uniform(size=labels.shape).astype(np.float32)
    seed = tf.constant([5, 6])

    def fn(labels, loss, seed):
        sampled = sample_balanced(labels, 64, 0.25, seed=seed)  # a [2] tensor seed: made per call
        mined = hard_negative_mining(loss, labels >= 0, tf.equal(labels, BACKGROUND), 3.0)
        return sampled, mined

    sampled, mined = three_ways(fn, labels, loss, seed)
    np.testing.assert_array_equal(sampled.sum(-1), [64, 64])
    np.testing.assert_array_equal(mined.sum(-1), [90, 0])
