"""RoI pooling and SPP against slow NumPy references; graph modes; TFLite builtins only."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfzoo.ops import roi


# --- slow, obvious NumPy references -------------------------------------------------


def reference_crop(image, box, crop_h, crop_w):
    """Bilinear crop of image [H, W, C] at box (normalized yxyx), crop_and_resize's rule.

    Sample coordinates are computed in float32 in the kernel's order, the interpolation
    in float64; points outside [0, H-1] x [0, W-1] read 0.
    """
    f32 = np.float32
    height, width, channels = image.shape
    y1, x1, y2, x2 = (f32(v) for v in box)

    def coords(start, end, size, crop):
        if crop > 1:
            scale = (end - start) * f32(size - 1) / f32(crop - 1)
            return [start * f32(size - 1) + f32(i) * scale for i in range(crop)]
        return [f32(0.5) * (start + end) * f32(size - 1)]

    out = np.zeros((crop_h, crop_w, channels))
    for i, y in enumerate(coords(y1, y2, height, crop_h)):
        if y < 0 or y > height - 1:
            continue
        top, bottom, ly = math.floor(y), math.ceil(y), float(y) - math.floor(y)
        for j, x in enumerate(coords(x1, x2, width, crop_w)):
            if x < 0 or x > width - 1:
                continue
            left, right, lx = math.floor(x), math.ceil(x), float(x) - math.floor(x)
            upper = image[top, left] * (1 - lx) + image[top, right] * lx
            lower = image[bottom, left] * (1 - lx) + image[bottom, right] * lx
            out[i, j] = upper * (1 - ly) + lower * ly
    return out


def reference_aligned_crop(image, box, crop_h, crop_w, aligned=True):
    """RoIAlign's aligned bilinear crop (torchvision ``roi_align(aligned=True)``'s sampling),
    in float64: ``box`` normalized to the map's edges, sample ``j`` of ``n`` at index
    ``a * S + (j + 0.5) * (b - a) * S / n - 0.5``; an index in ``[-1, S]`` is clamped to the
    map, one outside reads 0. ``aligned=False``: torchvision's ``aligned=False`` (its
    ``roi_align_kernel.cpp``), index ``a * S + (j + 0.5) * max((b - a) * S, 1) / n``."""
    height, width, channels = image.shape
    y1, x1, y2, x2 = (float(v) for v in box)

    def coords(start, end, size, crop):
        if not aligned:
            return [start * size + (j + 0.5) * max((end - start) * size, 1.0) / crop for j in range(crop)]
        return [start * size + (j + 0.5) * (end - start) * size / crop - 0.5 for j in range(crop)]

    def lerp(v, size):
        v = min(max(v, 0.0), size - 1.0)
        low = math.floor(v)
        return low, min(low + 1, size - 1), v - low

    out = np.zeros((crop_h, crop_w, channels))
    for i, y in enumerate(coords(y1, y2, height, crop_h)):
        if y < -1.0 or y > height:
            continue
        top, bottom, ly = lerp(y, height)
        for j, x in enumerate(coords(x1, x2, width, crop_w)):
            if x < -1.0 or x > width:
                continue
            left, right, lx = lerp(x, width)
            upper = image[top, left] * (1 - lx) + image[top, right] * lx
            lower = image[bottom, left] * (1 - lx) + image[bottom, right] * lx
            out[i, j] = upper * (1 - ly) + lower * ly
    return out


def reference_roi_pool(features, rois, out_h, out_w, s, aligned=True, mode="max"):
    batch, num_rois = rois.shape[:2]
    result = np.zeros((batch, num_rois, out_h, out_w, features.shape[-1]))
    for b in range(batch):
        for r in range(num_rois):
            crop = reference_aligned_crop(features[b], rois[b, r], out_h * s, out_w * s, aligned)
            for i in range(out_h):
                for j in range(out_w):
                    cell = crop[i * s:(i + 1) * s, j * s:(j + 1) * s]
                    result[b, r, i, j] = cell.max(axis=(0, 1)) if mode == "max" else cell.mean(axis=(0, 1))
    return result


def reference_spp(features, levels, window_stride=False):
    """Max over explicit windows; window_stride=True uses the paper's ceil/floor rule."""
    out = []
    for b in range(features.shape[0]):
        row = []
        for n in levels:
            h, w = features.shape[1:3]
            if window_stride:
                (wy, sy), (wx, sx) = roi.spp_bins(h, n), roi.spp_bins(w, n)
                ys = [(i * sy, i * sy + wy) for i in range(n)]
                xs = [(j * sx, j * sx + wx) for j in range(n)]
            else:
                ys = [(math.floor(i * h / n), math.ceil((i + 1) * h / n)) for i in range(n)]
                xs = [(math.floor(j * w / n), math.ceil((j + 1) * w / n)) for j in range(n)]
            for y0, y1 in ys:
                for x0, x1 in xs:
                    row.append(features[b, y0:y1, x0:x1].max(axis=(0, 1)))
        out.append(np.concatenate(row))
    return np.stack(out)


def _random_rois(rng, batch, num):
    """RoIs mostly inside the map, some crossing its border (extrapolation) or tiny."""
    yx = rng.uniform(-0.2, 0.9, (batch, num, 2))
    hw = rng.uniform(0.01, 0.6, (batch, num, 2))
    return np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)


# --- RoI pooling ----------------------------------------------------------------------


def test_roi_pool_and_builtin_match_numpy_reference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    rois = _random_rois(rng, 2, 6)
    expected = reference_roi_pool(features, rois, 3, 4, 2)
    fast = roi.roi_pool(features, rois, output_size=(3, 4), sampling_ratio=2).numpy()
    builtin = roi.roi_pool_builtin(features, rois, output_size=(3, 4), sampling_ratio=2)
    assert fast.shape == (2, 6, 3, 4, 3)
    np.testing.assert_allclose(fast, expected, atol=1e-5)
    np.testing.assert_allclose(builtin.numpy(), expected, atol=1e-5)
    # Border-crossing RoIs really did read the extrapolation value 0 somewhere.
    assert (reference_aligned_crop(features[0], [-0.5, -0.5, 0.2, 0.2], 4, 4) == 0).any()


def test_unaligned_average_roi_align_matches_torchvision_rule():
    """RoIAlign(aligned=False) with averaged bins (torchvision's MultiScaleRoIAlign): the
    RoIs moved by unaligned_rois and pooled with mode="avg", on both crop paths and on one
    pyramid level of two, against the slow reference of torchvision's kernel."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    rois = _random_rois(rng, 2, 6)
    rois[0, 0] = [0.3, 0.3, 0.3 + 0.02, 0.3 + 0.01]  # under one cell: torchvision widens it to one
    expected = reference_roi_pool(features, rois, 3, 4, 2, aligned=False, mode="avg")
    moved = roi.unaligned_rois(rois, [(9, 11)])
    fast = roi.roi_pool(features, moved, output_size=(3, 4), sampling_ratio=2, mode="avg").numpy()
    builtin = roi.roi_pool_builtin(features, moved, output_size=(3, 4), sampling_ratio=2, mode="avg").numpy()
    np.testing.assert_allclose(fast, expected, atol=1e-5)
    np.testing.assert_allclose(builtin, expected, atol=1e-5)
    assert np.abs(expected - reference_roi_pool(features, rois, 3, 4, 2, mode="avg")).max() > 0.1  # not aligned's
    # on a pyramid: each RoI moved by its own level's half cell
    coarse = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    levels = np.array([[0, 1, 0, 1, 1, 0]] * 2, np.int32)
    moved = roi.unaligned_rois(rois, [(9, 11), (5, 6)], tf.constant(levels))
    pooled = roi.multilevel_roi_pool([features, coarse], moved, levels, (3, 4), 2, mode="avg").numpy()
    for b in range(2):
        for r in range(6):
            source = features if levels[b, r] == 0 else coarse
            np.testing.assert_allclose(pooled[b, r], reference_roi_pool(
                source[b:b + 1], rois[b:b + 1, r:r + 1], 3, 4, 2, aligned=False, mode="avg")[0, 0], atol=1e-5)


def test_roi_pool_is_aligned_to_pixel_edges():
    """A 7-bin crop of the whole 7 x 7 map reads each pixel (no shrink); an RoI of the cells
    2-4 reads exactly them (no half-cell shift); at the map's border half a pixel outside
    reads the border, not 0 (crop_and_resize's own rule shrank every RoI by (H - 1) / H)."""
    rng = np.random.default_rng(6)
    features = rng.normal(size=(1, 7, 7, 2)).astype(np.float32)
    for pool in (roi.roi_pool, roi.roi_pool_builtin):
        whole = pool(features, np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32), output_size=7, sampling_ratio=1)
        np.testing.assert_allclose(whole.numpy()[0, 0], features[0], atol=1e-5)
        part = pool(features, np.array([[[2 / 7, 2 / 7, 5 / 7, 5 / 7]]], np.float32), output_size=3,
                    sampling_ratio=1)
        np.testing.assert_allclose(part.numpy()[0, 0], features[0, 2:5, 2:5], atol=1e-5)
        # A 14-point crop of the whole map samples at index -0.25 first: the border pixel.
        edge = pool(features, np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32), output_size=14, sampling_ratio=1)
        np.testing.assert_allclose(edge.numpy()[0, 0, 0, 0], features[0, 0, 0], atol=1e-5)


@pytest.mark.parametrize("crop_size", [(1, 1), (2, 5), (7, 7)])
def test_crop_and_resize_builtin_equals_tf_crop_and_resize(crop_size):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(3, 8, 6, 4)).astype(np.float32)
    rois = _random_rois(rng, 3, 5)
    rois[0, 0] = [0.0, 0.0, 1.0, 1.0]
    rois[1, 0] = [-0.5, -0.5, 1.5, 1.5]  # mostly outside
    expected = tf.image.crop_and_resize(features, rois.reshape(-1, 4), np.repeat(np.arange(3), 5),
                                        crop_size).numpy().reshape((3, 5) + crop_size + (4,))
    got = roi.crop_and_resize_builtin(features, rois, crop_size).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got[1, 1], reference_crop(features[1], rois[1, 1], *crop_size),
                               atol=1e-5)


def test_whole_map_roi_at_native_size_is_identity():
    features = np.arange(2 * 5 * 7 * 2, dtype=np.float32).reshape(2, 5, 7, 2)
    rois = np.tile(np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32), (2, 1, 1))
    for pool in (roi.roi_pool, roi.roi_pool_builtin):
        out = pool(features, rois, output_size=(5, 7), sampling_ratio=1).numpy()
        np.testing.assert_allclose(out[:, 0], features, atol=1e-4)


def test_roi_pool_bad_shapes_raise():
    with pytest.raises(ValueError):
        roi.roi_pool(np.zeros((1, 4, 4), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError):
        roi.roi_pool_builtin(np.zeros((1, 4, 4, 1), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError):
        roi.roi_pool(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 2, 4), np.float32),
                     sampling_ratio=0)


def test_roi_ops_run_in_tf_function_and_dataset_map():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(4, 10, 10, 2)).astype(np.float32)
    rois = _random_rois(rng, 4, 3)
    spec = [tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([None, None, 4])]
    for op in (roi.roi_pool, roi.roi_pool_builtin, roi.roi_spatial_pyramid_pool):
        eager = op(features, rois).numpy()
        graph = tf.function(op, input_signature=spec)(features, rois).numpy()
        ds = tf.data.Dataset.from_tensor_slices((features, rois)).batch(2).map(op)
        mapped = np.concatenate([x.numpy() for x in ds])
        np.testing.assert_allclose(graph, eager, atol=1e-5)
        np.testing.assert_allclose(mapped, eager, atol=1e-5)
    pooled = tf.function(roi.spatial_pyramid_pool, input_signature=spec[:1])(features).numpy()
    ds = tf.data.Dataset.from_tensor_slices(features).batch(3).map(roi.spatial_pyramid_pool)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in ds]), pooled)
    np.testing.assert_allclose(pooled, reference_spp(features, (3, 2, 1)), atol=1e-6)


# --- spatial pyramid pooling --------------------------------------------------------


def test_spp_bins_golden_values_from_seed():
    assert [roi.spp_bins(13, n) for n in (3, 2, 1)] == [(5, 4), (7, 6), (13, 13)]
    assert [roi.spp_bins(10, n) for n in (3, 2, 1)] == [(4, 3), (5, 5), (10, 10)]


@pytest.mark.parametrize("a", [13, 10])
def test_adaptive_bins_equal_window_stride_bins_on_seed_sizes(a):
    for n in (3, 2, 1):
        window, stride = roi.spp_bins(a, n)
        assert roi.spp_bin_edges(a, n) == [(i * stride, i * stride + window) for i in range(n)]
        assert roi.spp_bin_edges(a, n)[-1][1] == a


def test_adaptive_bins_always_n_nonempty_covering_bins():
    # The paper's rule breaks here: window 2, stride 1 -> 6 windows, not 4.
    window, stride = roi.spp_bins(7, 4)
    assert (7 - window) // stride + 1 == 6
    assert roi.spp_bin_edges(7, 4) == [(0, 2), (1, 4), (3, 6), (5, 7)]
    for a in range(1, 40):
        for n in range(1, 8):
            edges = roi.spp_bin_edges(a, n)
            assert len(edges) == n and edges[0][0] == 0 and edges[-1][1] == a
            assert all(end > start for start, end in edges)
            assert all(edges[i + 1][0] <= edges[i][1] for i in range(n - 1))  # no gap


def test_spatial_pyramid_pool_fixed_length_and_seed_windows():
    rng = np.random.default_rng(3)
    channels = 5
    lengths = []
    for size in (13, 10):  # conv5 of 224 and 180 inputs in the seed
        features = rng.normal(size=(2, size, size, channels)).astype(np.float32)
        out = roi.spatial_pyramid_pool(features, levels=(3, 2, 1)).numpy()
        lengths.append(out.shape[1])
        np.testing.assert_allclose(out, reference_spp(features, (3, 2, 1), window_stride=True))
    assert lengths == [channels * (9 + 4 + 1)] * 2
    # Non-square, awkward sizes (a < n too) still give the fixed length.
    odd = rng.normal(size=(1, 3, 7, channels)).astype(np.float32)
    out = roi.spatial_pyramid_pool(odd, levels=(4, 2, 1)).numpy()
    assert out.shape == (1, channels * 21)
    np.testing.assert_allclose(out, reference_spp(odd, (4, 2, 1)))


def test_spatial_pyramid_pool_max_pools_the_regular_levels_with_the_same_numbers():
    """On a static 13 x 13 map every level of SPP-Net's {6, 3, 2, 1} is the seed's regular
    window (one max_pool2d); the same map with dynamic sizes takes the bin slices."""
    rng = np.random.default_rng(5)
    features = rng.normal(size=(2, 13, 13, 4)).astype(np.float32)
    levels = (6, 3, 2, 1)
    assert all(roi._regular_window(13, n) == roi.spp_bins(13, n) for n in levels)
    assert roi._regular_window(10, 6) is None and roi._regular_window(tf.constant(13), 2) is None
    static = roi.spatial_pyramid_pool(features, levels).numpy()
    dynamic = tf.function(lambda f: roi.spatial_pyramid_pool(f, levels),
                          input_signature=[tf.TensorSpec([None, None, None, 4])])(features).numpy()
    np.testing.assert_array_equal(static, dynamic)
    np.testing.assert_allclose(static, reference_spp(features, levels))


def test_roi_spatial_pyramid_pool_matches_reference():
    """Each RoI cropped densely (aligned, grid x grid), then the seed's window/stride pyramid."""
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    rois = _random_rois(rng, 2, 4)
    grid = 6
    crops = np.stack([np.stack([reference_aligned_crop(features[b], rois[b, r], grid, grid) for r in range(4)])
                      for b in range(2)])  # [B, R, g, g, C]
    expected = reference_spp(crops.reshape(8, grid, grid, 3), (2, 1), window_stride=True).reshape(2, 4, -1)
    for builtin in (False, True):
        out = roi.roi_spatial_pyramid_pool(features, rois, levels=(2, 1), grid=grid, builtin=builtin)
        assert out.shape == (2, 4, 3 * 5)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_roi_spp_global_bin_sees_the_interior():
    """A peak in the middle of an RoI, away from its corners, reaches every level's bin over
    it (sampled at 2 x 2 points, the 1 x 1 bin used to read only the four corners)."""
    features = np.zeros((1, 16, 16, 1), np.float32)
    features[0, 7:9, 7:9, 0] = 1.0
    rois = np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32)
    for builtin in (False, True):
        out = roi.roi_spatial_pyramid_pool(features, rois, levels=(4, 2, 1), builtin=builtin).numpy()[0, 0]
        four, two, one = out[:16].reshape(4, 4), out[16:20].reshape(2, 2), out[20:]
        assert one[0] > 0.9 and two.max() > 0.9 and four[1:3, 1:3].max() > 0.9
        assert four[0, 0] == 0.0  # a corner bin far from the peak stays 0


# --- TFLite, builtin ops only -------------------------------------------------------


def test_roi_pool_builtin_converts_to_tflite_builtins_and_matches(tflite_op_names):
    from ai_edge_litert.interpreter import Interpreter

    @tf.function(input_signature=[tf.TensorSpec([None, 12, 10, 4], tf.float32),
                                  tf.TensorSpec([None, 6, 4], tf.float32)])
    def pool(features, rois):
        return roi.roi_pool_builtin(features, rois, output_size=(3, 3), sampling_ratio=2)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [pool.get_concrete_function()], pool)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    ops = tflite_op_names(model)
    assert {"GATHER", "MAX_POOL_2D"} <= ops
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()], ops

    rng = np.random.default_rng(5)
    features = rng.normal(size=(2, 12, 10, 4)).astype(np.float32)
    rois = _random_rois(rng, 2, 6)
    interpreter = Interpreter(model_content=model)
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    interpreter.resize_tensor_input(inputs["features"]["index"], features.shape)
    interpreter.resize_tensor_input(inputs["rois"]["index"], rois.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inputs["features"]["index"], features)
    interpreter.set_tensor(inputs["rois"]["index"], rois)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = roi.roi_pool(features, rois, output_size=(3, 3), sampling_ratio=2).numpy()
    assert got.shape == (2, 6, 3, 3, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_spatial_pyramid_pool_on_a_map_narrower_than_its_levels():
    """A 1-pixel side with 2 bins: the seed's stride is 0, the bins repeat the cell."""
    features = np.arange(10, dtype=np.float32).reshape(1, 1, 5, 2)
    assert roi._regular_window(1, 2) is None
    out = roi.spatial_pyramid_pool(features, (2, 1)).numpy()
    np.testing.assert_allclose(out, reference_spp(features, (2, 1)))
