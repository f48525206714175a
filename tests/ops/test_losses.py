"""tfzoo.ops.losses: the seed's focal-loss figures, stability, ignore labels, weights, no NaN."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfzoo.ops import losses
from tfzoo.ops.matcher import BACKGROUND, IGNORE


def logit(p):
    return math.log(p / (1 - p))


def focal(label, p, **kwargs):
    return float(losses.sigmoid_focal_loss([[float(label)]], [[logit(p)]], **kwargs).numpy()[0, 0])


def test_focal_matches_seed_foreground_figures():
    # The seed's worked examples, alpha = 0.25, gamma = 2 (it rounds: 2% tolerance).
    assert focal(1, 0.9) == pytest.approx(0.00026, rel=0.02)
    assert focal(1, 0.1) == pytest.approx(0.4667, rel=0.02)
    assert focal(1, 0.99) == pytest.approx(2.5e-7, rel=0.02)


def test_focal_background_uses_paper_alpha_t():
    # The seed weights background by 0.25 too (its figure 0.00026 for a background anchor
    # at p = 0.1); the paper's alpha_t = 1 - alpha = 0.75 makes it 3x that.
    assert focal(0, 0.1) == pytest.approx(3 * 0.00026, rel=0.02)
    assert focal(0, 0.1) == pytest.approx(0.75 * 0.1**2 * -math.log(0.9), rel=1e-4)
    # With alpha = 0.5 both sides are symmetric: fg at p equals bg at 1 - p.
    assert focal(1, 0.9, alpha=0.5) == pytest.approx(focal(0, 0.1, alpha=0.5), rel=1e-4)
    # gamma = 0, no alpha: plain cross-entropy (the seed's 0.1053 and 2.3025).
    assert focal(1, 0.9, alpha=None, gamma=0.0) == pytest.approx(0.1053, rel=1e-3)
    assert focal(0, 0.9, alpha=None, gamma=0.0) == pytest.approx(2.3025, rel=1e-3)


def test_focal_is_stable_at_extreme_logits():
    logits = tf.constant([[-100.0, 100.0, -100.0, 100.0, 0.0]])
    labels = tf.constant([[1.0, 0.0, 0.0, 1.0, 1.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.sigmoid_focal_loss(labels, logits)
    grad = tape.gradient(loss, logits)
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad.numpy()))
    # Confidently wrong: ~alpha_t * |logit|; confidently right: 0.
    np.testing.assert_allclose(loss.numpy()[0, :4], [25.0, 75.0, 0.0, 0.0], rtol=1e-4, atol=1e-6)


def test_focal_weights_per_anchor_or_per_element():
    labels = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)  # [B, A, K]
    logits = np.array([[[0.3, -1.0], [2.0, -0.5]]], np.float32)
    plain = losses.sigmoid_focal_loss(labels, logits).numpy()
    per_anchor = losses.sigmoid_focal_loss(labels, logits, weights=np.array([[2.0, 0.0]])).numpy()
    np.testing.assert_allclose(per_anchor, plain * np.array([[[2.0], [0.0]]]), rtol=1e-6)
    per_element = losses.sigmoid_focal_loss(labels, logits, weights=np.array([[[1.0, 0.0], [0.5, 1.0]]])).numpy()
    np.testing.assert_allclose(per_element, plain * [[[1.0, 0.0], [0.5, 1.0]]], rtol=1e-6)


def test_prior_bias():
    assert losses.prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)
    assert 1 / (1 + math.exp(-losses.prior_bias(0.01))) == pytest.approx(0.01)


def test_smooth_l1_known_values_and_beta():
    y_true = np.zeros([1, 4], np.float32)
    y_pred = np.array([[0.5, -2.0, 1.0, 0.0]], np.float32)
    # 0.5 * 0.25 + (2 - 0.5) + (1 - 0.5) + 0
    np.testing.assert_allclose(losses.smooth_l1(y_true, y_pred), [0.125 + 1.5 + 0.5], rtol=1e-6)
    # beta = 1/9 (detectron2's RPN): 0.5 - 1/18 + 2 - 1/18 + 1 - 1/18
    np.testing.assert_allclose(losses.smooth_l1(y_true, y_pred, beta=1 / 9), [3.5 - 3 / 18], rtol=1e-5)
    np.testing.assert_allclose(losses.smooth_l1(y_true, y_pred, beta=0.0), [3.5], rtol=1e-6)
    weighted = losses.smooth_l1(np.zeros([2, 3, 4]), np.ones([2, 3, 4]), weights=np.array([[1.0, 0.0, 2.0]] * 2))
    np.testing.assert_allclose(weighted, [[2.0, 0.0, 4.0]] * 2)


def test_softmax_cross_entropy_with_ignore():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]], np.float32)  # C = 2
    labels = np.array([0, BACKGROUND, 1, IGNORE], np.int32)
    got = losses.softmax_cross_entropy_with_ignore(labels, logits).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got[:3], [-log_softmax[0, 0], -log_softmax[1, 2], -log_softmax[2, 1]], rtol=1e-5)
    assert got[3] == 0.0
    weighted = losses.softmax_cross_entropy_with_ignore(labels, logits, weights=[1.0, 0.0, 2.0, 1.0]).numpy()
    np.testing.assert_allclose(weighted, got * [1.0, 0.0, 2.0, 0.0], rtol=1e-6)


def test_softmax_cross_entropy_without_background_logit():
    # The K class logits alone: a class target scores -log softmax; background and ignore
    # score exactly 0 (RetinaNet's auxiliary class term on positive anchors).
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 2.0, 1.0], [5.0, 0.0, 0.0]], np.float32)  # K = 3
    labels = np.array([0, BACKGROUND, 2, IGNORE, 3], np.int32)  # 3 >= K: no loss, as in the focal loss
    logits = np.concatenate([logits, logits[:1]])
    got = losses.softmax_cross_entropy_with_ignore(labels, logits, background_logit=False).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, [-log_softmax[0, 0], 0.0, -log_softmax[2, 2], 0.0, 0.0], rtol=1e-5)
    assert got[1] == 0.0 and got[3] == 0.0 and got[4] == 0.0


def test_softmax_ce_all_ignored_has_zero_loss_and_gradient():
    logits = tf.random.stateless_normal([2, 5, 4], seed=[1, 2])
    labels = tf.fill([2, 5], IGNORE)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(losses.softmax_cross_entropy_with_ignore(labels, logits))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), 0.0)


def test_iou_and_giou_losses(make_boxes):
    b = make_boxes(2, 5)
    np.testing.assert_allclose(losses.iou_loss(b, b), np.zeros([2, 5]), atol=1e-5)
    np.testing.assert_allclose(losses.giou_loss(b, b), np.zeros([2, 5]), atol=1e-5)
    unit = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    far = np.array([[1.0, 1.0, 2.0, 2.0]], np.float32)
    np.testing.assert_allclose(losses.iou_loss(unit, far), [1.0])
    np.testing.assert_allclose(losses.giou_loss(unit, far), [1.5], rtol=1e-6)  # 1 - (0 - 2/4)
    np.testing.assert_allclose(losses.giou_loss(unit, far, weights=[0.0]), [0.0])


def test_padding_gives_no_nan_loss_or_gradient():
    pad = tf.zeros([1, 3, 4])
    pred = tf.zeros([1, 3, 4])
    with tf.GradientTape() as tape:
        tape.watch(pred)
        total = (
            tf.reduce_sum(losses.giou_loss(pad, pred, weights=tf.zeros([1, 3])))
            + tf.reduce_sum(losses.iou_loss(pad, pred))
            + tf.reduce_sum(losses.smooth_l1(pad, pred, weights=tf.zeros([1, 3])))
            + tf.reduce_sum(losses.yolo_box_loss(pad, pred))
        )
    assert np.isfinite(float(total))
    assert np.all(np.isfinite(tape.gradient(total, pred).numpy()))


def test_yolo_terms():
    np.testing.assert_allclose(losses.squared_error([[1.0, 2.0]], [[0.0, 4.0]], weights=[0.5]), [2.5])
    true = np.array([[0.5, 0.5, 0.25, 0.16]], np.float32)  # cy, cx, h, w
    pred = np.array([[0.6, 0.5, 0.3, 0.6]], np.float32)  # cy, cx, sqrt h, sqrt w
    # 0.1^2 + (0.5 - 0.3)^2 + (0.4 - 0.6)^2
    np.testing.assert_allclose(losses.yolo_box_loss(true, pred), [0.01 + 0.04 + 0.04], rtol=1e-5)
    np.testing.assert_allclose(
        losses.sigmoid_cross_entropy([[1.0, 0.0]], [[0.0, 0.0]], weights=[[1.0, 2.0]]), [[math.log(2), 2 * math.log(2)]]
    )


def test_yolo_size_term_compares_square_roots_and_has_a_finite_gradient_at_zero():
    """The prediction holds sqrt(h), sqrt(w): the term is (sqrt t - s)^2, gradient 2 (s - sqrt t)."""
    true = tf.constant([[0.5, 0.5, 0.25, 0.25]] * 3, tf.float32)
    roots = np.array([-0.2, 0.0, 0.3], np.float32)
    pred = tf.Variable(np.stack([np.full(3, 0.5), np.full(3, 0.5), roots, np.full(3, 0.5)], -1).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.yolo_box_loss(true, pred)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, pred).numpy()[:, 2]
    np.testing.assert_allclose(loss.numpy(), (roots - 0.5) ** 2, rtol=1e-6)
    np.testing.assert_allclose(grad, 2 * (roots - 0.5), rtol=1e-6)


def test_in_graph_and_dataset(three_ways, make_boxes):
    labels = np.array([[0, BACKGROUND, IGNORE]], np.int32)
    onehot = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    logits = np.array([[[0.3, -0.2], [1.0, -2.0], [0.0, 0.1]]], np.float32)
    softmax_logits = np.array([[[0.3, -0.2, 0.0], [1.0, -2.0, 0.5], [0.0, 0.1, 9.0]]], np.float32)
    b1, b2 = make_boxes(1, 3), make_boxes(1, 3)
    weights = np.array([[1.0, 1.0, 0.0]], np.float32)

    def fn(labels, onehot, logits, softmax_logits, b1, b2, weights):
        return (
            losses.sigmoid_focal_loss(onehot, logits, weights=weights),
            losses.softmax_cross_entropy_with_ignore(labels, softmax_logits),
            losses.smooth_l1(b1, b2, weights=weights),
            losses.giou_loss(b1, b2, weights=weights),
        )

    focal, ce, l1, giou = three_ways(fn, labels, onehot, logits, softmax_logits, b1, b2, weights)
    assert focal.shape == (1, 3, 2) and ce.shape == l1.shape == giou.shape == (1, 3)
    assert ce[0, 2] == 0.0 and focal[0, 2].sum() == 0.0 and giou[0, 2] == 0.0


def focal_sum_reference(target_classes, logits, alpha, gamma):
    """The focal loss summed, in float64 NumPy, straight from the paper's formula."""
    x = np.asarray(logits, np.float64)
    classes = np.asarray(target_classes)
    labels = (classes[..., None] == np.arange(x.shape[-1])).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    p_t = np.where(labels > 0, p, 1.0 - p)
    alpha_t = 1.0 if alpha is None else np.where(labels > 0, alpha, 1.0 - alpha)
    counted = (classes != IGNORE)[..., None]
    return float(np.sum(np.where(counted, -alpha_t * (1.0 - p_t) ** gamma * np.log(p_t), 0.0)))


def focal_sum_and_grad(fn, target_classes, logits, scale=1.0):
    logits = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = scale * fn(target_classes, logits)
    return float(loss), tape.gradient(loss, logits).numpy()


def per_element_sum(target_classes, logits, alpha, gamma):
    onehot = tf.one_hot(target_classes, logits.shape[-1])  # BACKGROUND / IGNORE -> all 0
    not_ignored = tf.cast(tf.not_equal(target_classes, IGNORE), tf.float32)
    return tf.reduce_sum(losses.sigmoid_focal_loss(onehot, logits, alpha, gamma, weights=not_ignored))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (None, 1.5), (0.25, 3.0)])
def test_focal_loss_sum_and_its_gradient_equal_the_per_element_loss(alpha, gamma):
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(2, 300, 5)) * 4.0).astype(np.float32)
    logits[0, :6, 0] = [-100.0, 100.0, -30.0, 30.0, 0.0, 1e-3]  # saturated and central logits
    classes = rng.integers(0, 5, size=(2, 300)).astype(np.int32)
    draw = rng.random(size=(2, 300))
    classes[draw < 0.6] = BACKGROUND
    classes[(draw >= 0.6) & (draw < 0.7)] = IGNORE
    classes[0, :6] = [0, 0, 0, 0, 0, BACKGROUND]
    fused = lambda c, x: losses.sigmoid_focal_loss_sum(c, x, alpha, gamma)  # noqa: E731
    loss, grad = focal_sum_and_grad(fused, classes, logits)
    plain_loss, plain_grad = focal_sum_and_grad(lambda c, x: per_element_sum(c, x, alpha, gamma), classes, logits)
    assert loss == pytest.approx(focal_sum_reference(classes, logits, alpha, gamma), rel=1e-5)
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-4, atol=1e-6)
    assert np.all(grad[classes == IGNORE] == 0.0)
    # central differences of the float64 reference on a few moderate logits
    for index in [(0, 4, 0), (0, 5, 0), (1, 10, 2), (1, 200, 4), (0, 150, 3)]:
        step = np.zeros_like(logits, np.float64)
        step[index] = 1e-3
        numeric = (focal_sum_reference(classes, logits + step, alpha, gamma)
                   - focal_sum_reference(classes, logits - step, alpha, gamma)) / 2e-3
        assert grad[index] == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_focal_loss_sum_scales_with_the_upstream_gradient_and_masks_ignored_infinities():
    classes = np.array([[2, BACKGROUND, IGNORE, IGNORE]], np.int32)
    logits = np.array([[[0.5, -1.0, 2.0], [-3.0, 0.2, 1.0], [np.inf, -np.inf, 0.0], [np.nan, 1.0, 1.0]]], np.float32)
    loss, grad = focal_sum_and_grad(losses.sigmoid_focal_loss_sum, classes, logits)
    loss3, grad3 = focal_sum_and_grad(losses.sigmoid_focal_loss_sum, classes, logits, scale=3.0)
    assert math.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(focal_sum_reference(classes[:, :2], logits[:, :2], 0.25, 2.0), rel=1e-6)
    assert loss3 == pytest.approx(3.0 * loss, rel=1e-6)
    np.testing.assert_allclose(grad3, 3.0 * grad, rtol=1e-6)
    assert np.all(grad[0, 2:] == 0.0)
    # inside tf.function, on [A, K] rows
    graph = tf.function(losses.sigmoid_focal_loss_sum)(classes[0, :2], logits[0, :2])
    assert float(graph) == pytest.approx(loss, rel=1e-6)
