"""tfzoo.ops.anchors: the seed's table and counts, conventions, SSD boxes, YOLO priors, k-means."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfzoo.ops import anchors, boxes

# The seed's printed anchor_base (Faster R-CNN, base 16, ratios (0.5, 1, 2), scales (8, 16, 32)).
SEED_TABLE = np.array(
    [
        [-37.254833, -82.50967, 53.254833, 98.50967],
        [-82.50967, -173.01933, 98.50967, 189.01933],
        [-173.01933, -354.03867, 189.01933, 370.03867],
        [-56.0, -56.0, 72.0, 72.0],
        [-120.0, -120.0, 136.0, 136.0],
        [-248.0, -248.0, 264.0, 264.0],
        [-82.50967, -37.254833, 98.50967, 53.254833],
        [-173.01933, -82.50967, 189.01933, 98.50967],
        [-354.03867, -173.01933, 370.03867, 189.01933],
    ],
    np.float32,
)


def test_anchor_base_reproduces_seed_table():
    np.testing.assert_allclose(anchors.anchor_base().numpy(), SEED_TABLE, rtol=1e-6, atol=1e-4)


def test_aspect_ratio_is_height_over_width():
    h, w = boxes.yxyx_to_cyxhw(anchors.anchor_base(ratios=(2.0,), scales=(8,))).numpy()[0, 2:]
    assert h / w == pytest.approx(2.0)
    assert h * w == pytest.approx(128.0**2)


def test_grid_anchors_count_order_and_centres():
    grid = anchors.grid_anchors(50, 50, 16, anchors.anchor_base()).numpy()
    assert grid.shape == (22500, 4)  # the seed's 50 * 50 * 9
    # Cell (0, 0) is the seed's table (centre 8 = (0 + 0.5) * 16).
    np.testing.assert_allclose(grid[:9], SEED_TABLE, atol=1e-4)
    # Location-major: a conv output [H, W, A, 4] reshaped row-major.
    cells = grid.reshape(50, 50, 9, 4)
    i, j = 3, 7
    np.testing.assert_allclose(cells[i, j], SEED_TABLE + [16 * i, 16 * j, 16 * i, 16 * j], atol=1e-3)
    centres = boxes.yxyx_to_cyxhw(grid).numpy()[:, :2].reshape(50, 50, 9, 2)
    np.testing.assert_allclose(centres[i, j, :, 0], (i + 0.5) * 16, atol=1e-3)
    np.testing.assert_allclose(centres[i, j, :, 1], (j + 0.5) * 16, atol=1e-3)


def test_grid_anchors_recentres_any_base_and_takes_two_strides():
    base = np.array([[100.0, 100.0, 110.0, 120.0]], np.float32)  # centre ignored, size 10 x 20
    grid = anchors.grid_anchors(2, 3, (8, 4), base).numpy()
    np.testing.assert_allclose(grid[0], [4 - 5, 2 - 10, 4 + 5, 2 + 10])
    np.testing.assert_allclose(grid[5], [12 - 5, 10 - 10, 12 + 5, 10 + 10])  # cell (1, 2)


def test_single_level_anchors_rpn():
    rpn = anchors.single_level_anchors(800).numpy()
    assert rpn.shape == (22500, 4)
    np.testing.assert_allclose(rpn[:9] * 800, SEED_TABLE, atol=1e-3)


def test_anchor_sizes_match_seed():
    sizes = anchors.anchor_sizes()
    assert len(sizes) == 15
    assert sizes[0] == pytest.approx(32.0)
    assert sizes[1] == pytest.approx(40.317, abs=1e-3)
    assert sizes[3] == pytest.approx(64.0)
    assert sizes[-1] == pytest.approx(812.75, abs=1e-2)


def test_multilevel_anchors_retinanet_640():
    a = anchors.multilevel_anchors(640).numpy()
    assert a.shape == (76725, 4)  # (80^2 + 40^2 + 20^2 + 10^2 + 5^2) * 9
    cyxhw = boxes.yxyx_to_cyxhw(a * 640).numpy()
    # First location of P3: centre (4, 4); scales outer, ratios inner (seed's loop).
    np.testing.assert_allclose(cyxhw[:9, :2], 4.0, atol=1e-3)
    sizes = np.sqrt(cyxhw[:9, 2] * cyxhw[:9, 3])
    np.testing.assert_allclose(sizes, np.repeat(anchors.anchor_sizes()[:3], 3), rtol=1e-5)
    np.testing.assert_allclose(cyxhw[:9, 2] / cyxhw[:9, 3], [0.5, 1, 2] * 3, rtol=1e-5)
    # Last anchor: P7 (stride 128), last cell centre (4.5 * 128), size 812.75, ratio 2.
    np.testing.assert_allclose(cyxhw[-1, :2], 4.5 * 128, atol=1e-2)
    assert math.sqrt(cyxhw[-1, 2] * cyxhw[-1, 3]) == pytest.approx(812.75, abs=0.05)


def test_multilevel_anchors_non_square_uses_ceil():
    a = anchors.multilevel_anchors((500, 300)).numpy()
    expected = sum(math.ceil(500 / 2**l) * math.ceil(300 / 2**l) for l in range(3, 8)) * 9
    assert a.shape == (expected, 4)
    assert anchors.feature_map_sizes((500, 300), 3, 4) == [(63, 38), (32, 19)]
    # Normalized by the image: the centre of P3 cell (0, 0) is (4 / 500, 4 / 300).
    np.testing.assert_allclose(boxes.yxyx_to_cyxhw(a[:1]).numpy()[0, :2], [4 / 500, 4 / 300], rtol=1e-5)


def test_fpn_faster_rcnn_sizes():
    a = anchors.multilevel_anchors(256, min_level=2, max_level=6, anchor_scale=8, scales_per_octave=1)
    cyxhw = boxes.yxyx_to_cyxhw(a * 256).numpy()
    sizes = np.unique(np.round(np.sqrt(cyxhw[:, 2] * cyxhw[:, 3])))
    np.testing.assert_allclose(sizes, [32, 64, 128, 256, 512])


def test_ssd300_default_boxes():
    d = anchors.ssd_default_boxes().numpy()
    assert d.shape == (8732, 4)
    counts = [38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 4, 1 * 1 * 4]
    assert sum(counts) == 8732
    cyxhw = boxes.yxyx_to_cyxhw(d).numpy()
    s = [0.2 + 0.7 * k / 5 for k in range(6)] + [1.0]
    # First cell of conv4_3: s_1, sqrt(s_1 s_2), then ratio 2 and 1/2.
    first = cyxhw[:4]
    np.testing.assert_allclose(first[:, :2], 0.5 / 38, rtol=1e-5)
    np.testing.assert_allclose(first[0, 2:], [0.2, 0.2], rtol=1e-5)
    np.testing.assert_allclose(first[1, 2:], [math.sqrt(0.2 * s[1])] * 2, rtol=1e-5)
    np.testing.assert_allclose(first[2, 2:], [0.2 * math.sqrt(2), 0.2 / math.sqrt(2)], rtol=1e-5)
    np.testing.assert_allclose(first[3, 2:], [0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], rtol=1e-5)
    # Second layer starts after the first and has 6 per cell with ratios 2, 1/2, 3, 1/3.
    second = cyxhw[counts[0] : counts[0] + 6]
    np.testing.assert_allclose(second[:, :2], 0.5 / 19, rtol=1e-5)
    np.testing.assert_allclose(second[:, 2] / second[:, 3], [1, 1, 2, 0.5, 3, 1 / 3], rtol=1e-5)
    # The 1x1 layer: s_6 = 0.9 and the extra sqrt(0.9 * 1.0).
    last = cyxhw[-4:]
    np.testing.assert_allclose(last[:, :2], 0.5, rtol=1e-6)
    np.testing.assert_allclose(last[0, 2], 0.9, rtol=1e-5)
    np.testing.assert_allclose(last[1, 2], math.sqrt(0.9), rtol=1e-5)
    clipped = anchors.ssd_default_boxes(clip=True).numpy()
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0 and (d.min() < 0.0 or d.max() > 1.0)


def test_ssd512_variant_and_validation():
    d = anchors.ssd_default_boxes(
        feature_sizes=(64, 32, 16, 8, 4, 2, 1),
        s_min=0.1,
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    )
    assert d.shape == (64 * 64 * 4 + (32**2 + 16**2 + 8**2 + 4**2) * 6 + (2 * 2 + 1) * 4, 4)  # 24564
    assert d.shape[0] == 24564
    with pytest.raises(ValueError):
        anchors.ssd_default_boxes(feature_sizes=(38, 19))
    with pytest.raises(ValueError):
        anchors.ssd_default_boxes(feature_sizes=(2,), aspect_ratios=((2,),), scales=(0.1,))


def test_yolo_priors_are_stored_height_first():
    assert len(anchors.YOLOV2_VOC_PRIORS_HW) == 5 and len(anchors.YOLOV3_COCO_PRIORS_HW_PX) == 9
    # Paper lists (w, h) = (10, 13) first and (373, 326) last.
    assert anchors.YOLOV3_COCO_PRIORS_HW_PX[0] == (13, 10)
    assert anchors.YOLOV3_COCO_PRIORS_HW_PX[-1] == (326, 373)
    assert anchors.YOLOV2_VOC_PRIORS_HW[0] == (1.73145, 1.3221)
    assert sorted(i for mask in anchors.YOLOV3_MASKS for i in mask) == list(range(9))


def test_kmeans_priors_recovers_synthetic_clusters(rng):
    true_hw = np.array([[10.0, 20.0], [50.0, 50.0], [120.0, 60.0], [30.0, 200.0]])
    sizes = np.concatenate([c * rng.uniform(0.93, 1.07, size=(80, 2)) for c in true_hw])
    priors, mean_iou = anchors.kmeans_priors(rng.permutation(sizes), k=4, seed=0)
    priors = priors.numpy()
    order = np.argsort(true_hw.prod(axis=1))
    np.testing.assert_allclose(priors, true_hw[order], rtol=0.03)
    assert np.all(np.diff(priors.prod(axis=1)) > 0)  # sorted by area
    assert 0.85 < float(mean_iou) <= 1.0
    # Deterministic given the seed.
    again, _ = anchors.kmeans_priors(rng.permutation(sizes), k=4, seed=0)
    np.testing.assert_allclose(np.sort(again.numpy(), axis=0), np.sort(priors, axis=0), rtol=1e-4)


def test_kmeans_mean_iou_is_one_for_k_equal_distinct_sizes():
    sizes = np.array([[1.0, 2.0], [3.0, 3.0], [8.0, 2.0]] * 5)
    priors, mean_iou = anchors.kmeans_priors(sizes, k=3, seed=1)
    assert float(mean_iou) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(priors, [[1.0, 2.0], [3.0, 3.0], [8.0, 2.0]], rtol=1e-6)


def test_in_graph_and_dataset(three_ways):
    # Dynamic feature-map sizes (as tensors) and a static base table.
    base = anchors.anchor_base()
    out = three_ways(lambda h, w: anchors.grid_anchors(h, w, 16, base), tf.constant(5), tf.constant(4))
    assert out.shape == (5 * 4 * 9, 4)
    np.testing.assert_allclose(out, anchors.grid_anchors(5, 4, 16, base).numpy())
    multi = three_ways(lambda size: anchors.multilevel_anchors(size), tf.constant(128))
    np.testing.assert_allclose(multi, anchors.multilevel_anchors(128).numpy(), atol=1e-6)
    sizes = np.array([[1.0, 2.0], [3.0, 3.0], [8.0, 2.0]] * 5, np.float32)
    priors, _ = three_ways(lambda s: anchors.kmeans_priors(s, k=3, seed=1), sizes)
    np.testing.assert_allclose(priors, [[1.0, 2.0], [3.0, 3.0], [8.0, 2.0]], rtol=1e-6)


def test_yolo_prior_boxes_lay_each_prior_on_every_cell():
    priors = np.asarray(anchors.YOLOV3_COCO_PRIORS_HW_PX, np.float32) / 416
    boxes = anchors.yolo_prior_boxes([(13, 13), (26, 26), (52, 52)], priors, anchors.YOLOV3_MASKS).numpy()
    assert boxes.shape == (10647, 4)  # (13^2 + 26^2 + 52^2) x 3
    first = boxes[:3]  # cell (0, 0) of the 13 x 13 map, priors 6, 7, 8
    np.testing.assert_allclose((first[:, :2] + first[:, 2:]) / 2, 0.5 / 13, atol=1e-6)
    np.testing.assert_allclose(first[:, 2:] - first[:, :2], priors[[6, 7, 8]], atol=1e-6)
    second = boxes[3]  # the next cell: one column right
    np.testing.assert_allclose((second[1] + second[3]) / 2, 1.5 / 13, atol=1e-6)
    assert anchors.yolo_prior_boxes([(13, 13)], priors[:5], [(0, 1, 2, 3, 4)]).shape == (845, 4)


def test_shape_iou_compares_sizes_at_a_common_centre():
    iou = anchors.shape_iou([[0.2, 0.2], [0.1, 0.4]], [[0.2, 0.2], [0.4, 0.1]]).numpy()
    np.testing.assert_allclose(iou, [[1.0, 0.02 / (0.04 + 0.04 - 0.02)], [0.02 / 0.06, 0.01 / 0.07]], rtol=1e-5)
