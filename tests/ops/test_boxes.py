"""tfzoo.ops.boxes: conversions, IoU/GIoU against NumPy references, edits, validity."""
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import pairwise_iou as np_iou
from tfzoo.ops import boxes


def np_giou(a, b):
    iou = np_iou(a, b)
    out = np.zeros_like(iou)
    for i, (ay1, ax1, ay2, ax2) in enumerate(a):
        for j, (by1, bx1, by2, bx2) in enumerate(b):
            inter = max(0.0, min(ay2, by2) - max(ay1, by1)) * max(0.0, min(ax2, bx2) - max(ax1, bx1))
            union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter
            enclose = (max(ay2, by2) - min(ay1, by1)) * (max(ax2, bx2) - min(ax1, bx1))
            out[i, j] = iou[i, j] - (enclose - union) / enclose
    return out


def test_conversions_round_trip(make_boxes):
    b = make_boxes(2, 5)
    for forward, backward in [
        (boxes.yxyx_to_xyxy, boxes.xyxy_to_yxyx),
        (boxes.yxyx_to_xywh, boxes.xywh_to_yxyx),
        (boxes.yxyx_to_cyxhw, boxes.cyxhw_to_yxyx),
    ]:
        np.testing.assert_allclose(backward(forward(b)).numpy(), b, atol=1e-6)


def test_conversions_known_values():
    b = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)  # y1, x1, y2, x2
    np.testing.assert_allclose(boxes.yxyx_to_xyxy(b), [[20, 10, 60, 30]])
    np.testing.assert_allclose(boxes.yxyx_to_xywh(b), [[20, 10, 40, 20]])
    np.testing.assert_allclose(boxes.yxyx_to_cyxhw(b), [[20, 40, 20, 40]])
    np.testing.assert_allclose(boxes.normalize(b, 100, 200), [[0.1, 0.1, 0.3, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(boxes.denormalize(boxes.normalize(b, 100, 200), 100, 200), b, rtol=1e-6)


def test_bad_last_dimension_raises():
    with pytest.raises(ValueError):
        boxes.area(tf.zeros([3, 5]))
    with pytest.raises(ValueError):
        boxes.iou(tf.zeros([3, 4]), tf.zeros([3, 2]))


def test_area_clamps_inverted_boxes():
    np.testing.assert_allclose(boxes.area([[0.0, 0.0, 2.0, 3.0], [2.0, 0.0, 1.0, 3.0]]), [6.0, 0.0])


def test_iou_self_is_one(make_boxes):
    b = make_boxes(7)
    np.testing.assert_allclose(np.diag(boxes.iou(b, b).numpy()), np.ones(7), rtol=1e-5)
    np.testing.assert_allclose(boxes.aligned_iou(b, b).numpy(), np.ones(7), rtol=1e-5)
    np.testing.assert_allclose(np.diag(boxes.giou(b, b).numpy()), np.ones(7), rtol=1e-5)


def test_iou_matches_numpy_reference(make_boxes):
    a, b = make_boxes(20), make_boxes(15)
    np.testing.assert_allclose(boxes.iou(a, b).numpy(), np_iou(a, b), atol=1e-5)
    np.testing.assert_allclose(boxes.giou(a, b).numpy(), np_giou(a, b), atol=1e-5)


def test_iou_batched_and_aligned_agree_with_pairwise(make_boxes):
    a, b = make_boxes(3, 6), make_boxes(3, 6)
    pairwise = boxes.iou(a, b).numpy()  # [3, 6, 6]
    assert pairwise.shape == (3, 6, 6)
    for i in range(3):
        np.testing.assert_allclose(pairwise[i], np_iou(a[i], b[i]), atol=1e-5)
    np.testing.assert_allclose(boxes.aligned_iou(a, b).numpy(), np.diagonal(pairwise, axis1=1, axis2=2), atol=1e-6)
    np.testing.assert_allclose(
        boxes.aligned_giou(a, b).numpy(), np.diagonal(boxes.giou(a, b).numpy(), axis1=1, axis2=2), atol=1e-6
    )


def test_giou_known_values():
    unit = [[0.0, 0.0, 1.0, 1.0]]
    # Disjoint, touching at a corner region: enclosure 2x2=4, union 2 -> 0 - 2/4.
    np.testing.assert_allclose(boxes.giou(unit, [[1.0, 1.0, 2.0, 2.0]]), [[-0.5]], atol=1e-6)
    # Half overlap side by side: IoU 1/3, enclosure = union -> GIoU = IoU.
    np.testing.assert_allclose(boxes.giou(unit, [[0.0, 0.5, 1.0, 1.5]]), [[1 / 3]], atol=1e-6)
    # Far apart: tends to -1.
    assert boxes.giou(unit, [[99.0, 99.0, 100.0, 100.0]]).numpy()[0, 0] < -0.99


def test_zero_area_and_padding_give_no_nan():
    pad = np.zeros([3, 4], np.float32)
    real = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    degenerate = np.array([[0.3, 0.3, 0.3, 0.3], [0.5, 0.5, 0.2, 0.2]], np.float32)  # point, inverted
    for a, b in [(pad, pad), (pad, real), (real, degenerate), (degenerate, degenerate)]:
        for fn in (boxes.iou, boxes.giou):
            value = fn(a, b).numpy()
            assert np.all(np.isfinite(value)), (fn, value)
    np.testing.assert_array_equal(boxes.iou(pad, real).numpy(), 0.0)
    assert np.all(np.isfinite(boxes.aligned_giou(pad, pad).numpy()))
    assert np.all(np.isfinite(boxes.aligned_iou(pad, pad).numpy()))


def test_empty_inputs():
    assert boxes.iou(tf.zeros([0, 4]), tf.zeros([5, 4])).shape == (0, 5)
    assert boxes.iou(tf.zeros([5, 4]), tf.zeros([0, 4])).shape == (5, 0)


def test_flip_twice_is_identity_and_flip_is_correct(make_boxes):
    b = make_boxes(6)
    np.testing.assert_allclose(boxes.flip_left_right(boxes.flip_left_right(b)), b, atol=1e-6)
    np.testing.assert_allclose(boxes.flip_up_down(boxes.flip_up_down(b)), b, atol=1e-6)
    np.testing.assert_allclose(boxes.flip_left_right([[0.1, 0.2, 0.3, 0.5]]), [[0.1, 0.5, 0.3, 0.8]], atol=1e-6)
    np.testing.assert_allclose(boxes.flip_up_down([[0.1, 0.2, 0.3, 0.5]]), [[0.7, 0.2, 0.9, 0.5]], atol=1e-6)
    assert np.all(boxes.valid_mask(boxes.flip_left_right(b)).numpy())


def test_clip():
    np.testing.assert_allclose(boxes.clip([[-0.5, 0.2, 1.5, 0.9]]), [[0.0, 0.2, 1.0, 0.9]])


def test_valid_mask_and_filter_boxes():
    b = np.array(
        [[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.2, 0.9], [0.1, 0.1, np.nan, 0.2], [0.1, 0.1, 0.12, 0.5]],
        np.float32,
    )
    np.testing.assert_array_equal(boxes.valid_mask(b), [True, False, False, False, True])
    np.testing.assert_array_equal(boxes.valid_mask(b, min_size=0.05), [True, False, False, False, False])
    kept, classes = boxes.filter_boxes(b, tf.constant([3, 4, 5, 6, 7]))
    np.testing.assert_allclose(kept, b[[0, 4]])
    np.testing.assert_array_equal(classes, [3, 7])


def test_ops_in_graph_and_dataset(three_ways, make_boxes):
    a, b = make_boxes(2, 4), make_boxes(2, 3)
    out = three_ways(lambda x, y: (boxes.iou(x, y), boxes.giou(x, y), boxes.yxyx_to_cyxhw(x)), a, b)
    np.testing.assert_allclose(out[0][0], np_iou(a[0], b[0]), atol=1e-5)
