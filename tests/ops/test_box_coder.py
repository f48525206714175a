"""tfzoo.ops.box_coder: the seed's formulas, the round trip, weights, clamp, padding."""
import math

import numpy as np
import pytest

from tfzoo.ops import box_coder


def test_golden_value_matches_seed_formulas():
    # Anchor centre (y_a, x_a) = (50, 40), size (h_a, w_a) = (20, 10).
    anchor = np.array([[40.0, 35.0, 60.0, 45.0]], np.float32)
    # Box centre (y, x) = (55, 42), size (h, w) = (40, 5).
    box = np.array([[35.0, 39.5, 75.0, 44.5]], np.float32)
    t_y = (55 - 50) / 20  # t_y = (y - y_a) / h_a
    t_x = (42 - 40) / 10  # t_x = (x - x_a) / w_a
    t_h = math.log(40 / 20)  # t_h = log(h / h_a)
    t_w = math.log(5 / 10)  # t_w = log(w / w_a)
    np.testing.assert_allclose(box_coder.encode(box, anchor), [[t_y, t_x, t_h, t_w]], rtol=1e-6)
    np.testing.assert_allclose(
        box_coder.encode(box, anchor, weights=(10.0, 10.0, 5.0, 5.0)),
        [[10 * t_y, 10 * t_x, 5 * t_h, 5 * t_w]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(box_coder.decode([[t_y, t_x, t_h, t_w]], anchor), box, rtol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)])
def test_decode_inverts_encode(make_boxes, weights):
    boxes = make_boxes(3, 50)  # [B, A, 4]
    anchors = make_boxes(50)  # [A, 4], broadcast over B
    deltas = box_coder.encode(boxes, anchors, weights)
    assert deltas.shape == (3, 50, 4)
    np.testing.assert_allclose(box_coder.decode(deltas, anchors, weights).numpy(), boxes, atol=1e-5)


def test_encode_inverts_decode(rng, make_boxes):
    anchors = make_boxes(40)
    deltas = rng.normal(0, 1, size=(40, 4)).astype(np.float32)
    np.testing.assert_allclose(box_coder.encode(box_coder.decode(deltas, anchors), anchors).numpy(), deltas, atol=1e-4)


def test_decode_clamps_dh_dw_before_exp():
    anchor = np.array([[0.0, 0.0, 16.0, 16.0]], np.float32)
    huge = np.array([[0.0, 0.0, 1e4, 1e4]], np.float32)
    boxes = box_coder.decode(huge, anchor).numpy()
    assert np.all(np.isfinite(boxes))
    # Clamped at log(1000 / 16): the box is at most 1000 px for a 16 px anchor.
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 1000.0, rtol=1e-4)
    np.testing.assert_allclose(boxes[0, 3] - boxes[0, 1], 1000.0, rtol=1e-4)
    assert box_coder.DEFAULT_CLAMP == pytest.approx(math.log(1000 / 16))
    # The clamp applies to dh / wh: a weight of 5 lets dh reach 5 * clamp.
    weighted = box_coder.decode(huge, anchor, weights=(1.0, 1.0, 5.0, 5.0)).numpy()
    np.testing.assert_allclose(weighted[0, 2] - weighted[0, 0], 1000.0, rtol=1e-4)
    unclamped = box_coder.decode([[0.0, 0.0, 5.0, 5.0]], anchor, clamp=None).numpy()
    np.testing.assert_allclose(unclamped[0, 2] - unclamped[0, 0], 16 * math.exp(5.0), rtol=1e-4)


def test_padding_and_degenerate_boxes_encode_finite():
    anchors = np.array([[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]], np.float32)
    padding = np.zeros([2, 4], np.float32)
    deltas = box_coder.encode(padding, anchors).numpy()
    assert np.all(np.isfinite(deltas))
    assert np.all(np.isfinite(box_coder.decode(deltas, anchors).numpy()))


def test_bad_weights_raise():
    with pytest.raises(ValueError):
        box_coder.encode(np.zeros([1, 4]), np.zeros([1, 4]), weights=(1.0, 1.0))


def test_in_graph_and_dataset(three_ways, make_boxes):
    boxes, anchors = make_boxes(2, 8), make_boxes(8)
    weights = (10.0, 10.0, 5.0, 5.0)
    out = three_ways(
        lambda b, a: box_coder.decode(box_coder.encode(b, a, weights), a, weights),
        boxes,
        anchors,
    )
    np.testing.assert_allclose(out, boxes, atol=1e-5)
