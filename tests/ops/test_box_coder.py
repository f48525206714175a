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


# --- grid cells (YOLO) -----------------------------------------------------------------


def normal_to_yolo_format(bbox, anchor, img_size, grid_size):
    """The seed's YOLO encoding, as the seed writes it (the golden reference)."""
    y, x, h, w = bbox  # bounding box
    y1, x1, y2, x2 = anchor  # supporting cell
    size_h = img_size[0] / grid_size[0]  # height of the cell
    size_w = img_size[1] / grid_size[1]  # width of the cell
    new_x = (x - x1) / size_w  # center_x wrt to cell
    new_y = (y - y1) / size_h  # center_y wrt to cell
    new_h = h / img_size[0]  # height of the object normalized with the height of the image
    new_w = w / img_size[1]  # width of the object normalized with the width of the image
    return [new_y, new_x, new_h, new_w]


@pytest.mark.parametrize("img_size, grid_size", [((448, 448), (7, 7)), ((375, 500), (7, 7)), ((416, 416), (13, 13))])
def test_cell_encode_reproduces_the_seeds_yolo_encoding(img_size, grid_size):
    rng = np.random.default_rng(0)
    height, width = img_size
    y1 = rng.uniform(0, height - 20, 64)
    x1 = rng.uniform(0, width - 20, 64)
    y2 = np.minimum(y1 + rng.uniform(4, 300, 64), height)
    x2 = np.minimum(x1 + rng.uniform(4, 300, 64), width)
    boxes_px = np.stack([y1, x1, y2, x2], -1)
    boxes = (boxes_px / [height, width, height, width]).astype(np.float32)
    cells, offsets = box_coder.cell_encode(boxes, grid_size)
    cell_h, cell_w = height / grid_size[0], width / grid_size[1]
    for k, (a, b, c, d) in enumerate(boxes_px):
        y, x, h, w = (a + c) / 2, (b + d) / 2, c - a, d - b
        row, col = int(y // cell_h), int(x // cell_w)  # the cell that holds the centre
        supporting = (row * cell_h, col * cell_w, (row + 1) * cell_h, (col + 1) * cell_w)
        want = normal_to_yolo_format((y, x, h, w), supporting, img_size, grid_size)
        assert tuple(cells[k].numpy()) == (row, col)
        np.testing.assert_allclose(offsets[k], want[:2], atol=2e-5)
        np.testing.assert_allclose(boxes[k, 2:] - boxes[k, :2], want[2:], atol=1e-6)
    # and back: the cell, the offset and the size give the box again
    decoded = box_coder.cell_decode(offsets, boxes[:, 2:] - boxes[:, :2], cells, grid_size)
    np.testing.assert_allclose(decoded, boxes, atol=1e-6)


def test_a_centre_on_the_last_edge_stays_in_the_last_cell():
    cells, offsets = box_coder.cell_encode([[0.8, 0.8, 1.0, 1.0]], (7, 7))  # centre 0.9: cell 6
    assert cells.numpy().tolist() == [[6, 6]] and np.all((offsets.numpy() >= 0) & (offsets.numpy() <= 1))
    cells, offsets = box_coder.cell_encode([[1.0, 1.0, 1.0, 1.0]], (7, 7))  # centre exactly 1.0
    assert cells.numpy().tolist() == [[6, 6]] and np.allclose(offsets, 1.0)


def test_prior_decode_inverts_prior_encode_and_clamps():
    sizes = np.array([[0.1, 0.3], [0.02, 0.9]], np.float32)
    priors = np.array([[0.2, 0.2], [0.05, 0.5]], np.float32)
    t = box_coder.prior_encode(sizes, priors)
    np.testing.assert_allclose(t, np.log(sizes / priors), rtol=1e-6)
    np.testing.assert_allclose(box_coder.prior_decode(t, priors), sizes, rtol=1e-6)
    big = box_coder.prior_decode([[100.0, 0.0]], [[0.1, 0.1]])
    np.testing.assert_allclose(big, [[0.1 * 1000 / 16, 0.1]], rtol=1e-5)  # exp clamped at log(1000 / 16)
