"""SPP-Net: the paper's pyramid on each proposal's window, frozen convolutions, exports."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
import tfzoo.data
from tfzoo.models import MODELS
from tfzoo.models import faster_rcnn as frcnn
from tfzoo.models import spp_net
from tfzoo.ops import roi as roi_ops

from tests.models.test_fast_rcnn import _with_proposals


def _tiny(name="spp_net", **overrides):
    return tfzoo.build_model(name, **{**spp_net.SPPNet.tiny, "num_classes": 5, "backbone_weights": None,
                                      **overrides})


def test_the_papers_settings():
    config = MODELS["spp_net"].config
    assert config.spp_levels == (6, 3, 2, 1) and sum(n * n for n in config.spp_levels) == 50  # the paper's 50 bins
    assert (config.spp_grid, config.freeze_backbone, config.image_size, config.max_proposals) == (13, True, 672, 2000)
    assert (config.batch_size * config.roi_samples, config.roi_positive_fraction) == (256, 0.25)
    assert (config.learning_rate, config.lr_decay_at) == (1e-4, (250.0 / 300.0,))
    assert MODELS["spp_net"].family == "SPP-Net" and MODELS["spp_net_mobile"].cpu
    assert not MODELS["spp_net_mobile"].config.freeze_backbone  # random convolutions must learn
    # VGG-16's fc6 takes 7 x 7 x 512, not the pyramid's 50 x 512: ImageNet fc weights do not fit
    assert not frcnn._vgg16_head_fits(config) and frcnn._vgg16_head_fits(MODELS["fast_rcnn"].config)
    with pytest.raises(ValueError, match="spp_grid"):
        config.replace(spp_grid=4)


def test_the_pooling_layer_is_the_pyramid_op():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    rois = np.array([[[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]], [[0.3, 0.3, 0.4, 0.5], [0.5, 0.1, 0.9, 0.4]]],
                    np.float32)
    layer = frcnn.SPPPool((3, 2, 1), grid=6)
    got = layer(features, rois).numpy()
    want = roi_ops.roi_spatial_pyramid_pool(features, rois, (3, 2, 1), 6).numpy()
    assert got.shape == (2, 2, 3 * 14)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with roi_ops.builtin_crops():  # the TFLite path: the same numbers
        np.testing.assert_allclose(layer(features, rois).numpy(), want, atol=1e-5)


def test_fine_tuning_leaves_the_convolutions_frozen():
    keras.utils.set_random_seed(0)
    detector = _tiny()
    assert {w.path for w in detector.trainable_weights} == {
        w.path for name in ("roi_fc0", "roi_class", "roi_box") for w in detector.get_layer(name).weights}
    before = [w.numpy().copy() for w in detector.non_trainable_weights]
    head = detector.get_layer("roi_fc0").get_weights()[0].copy()
    train = tfzoo.data.pipeline(tfzoo.data.load("shapes:4", "train").map(_with_proposals), detector, 2, training=True)
    detector.compile(optimizer=keras.optimizers.SGD(1e-2))
    history = detector.fit(train, epochs=1, steps_per_epoch=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, detector.non_trainable_weights))  # BN stats too
    assert not np.array_equal(head, detector.get_layer("roi_fc0").get_weights()[0])


def test_exports_agree(tmp_path):
    from tfzoo.export import export_tflite, load_model
    from tfzoo.export.tflite import non_builtin_ops, op_names

    detector = _tiny("spp_net_mobile")
    data = tfzoo.data.load("shapes:2", "val").map(_with_proposals)
    x, _ = next(iter(tfzoo.data.pipeline(data, detector, 1, training=False)))
    x = {k: v.numpy() for k, v in x.items()}
    model = load_model(export_tflite(detector, str(tmp_path / "model.tflite"), raw_outputs=True))
    np.testing.assert_allclose(model.raw_outputs(x)[frcnn.CLASS_LOGITS], detector(x)[frcnn.CLASS_LOGITS].numpy(),
                               atol=1e-4)
    export_tflite(detector, str(tmp_path / "int8.tflite"), quantize="int8",
                  calibration_images=tfzoo.data.pipeline(data, detector, 1, training=False))
    assert not non_builtin_ops(op_names((tmp_path / "int8.tflite").read_bytes()))
    loaded = keras.saving.load_model(_save(detector, tmp_path), safe_mode=True)
    assert type(loaded) is spp_net.SPPNet
    np.testing.assert_allclose(loaded(x)[frcnn.CLASS_LOGITS], detector(x)[frcnn.CLASS_LOGITS], atol=1e-5)


def _save(detector, tmp_path):
    path = str(tmp_path / "model.keras")
    detector.save(path)
    return path


def test_closest_scale_is_the_papers_rule():
    """Each window is pooled at the scale where it covers closest to 224 x 224 pixels."""
    rois = tf.constant([[[0.0, 0.0, 0.5, 0.5],      # 224 px a side at 448: scale 448
                         [0.0, 0.0, 0.2, 0.2],      # 96 px at 480, 240 at 1200: the largest
                         [0.0, 0.0, 1.0, 1.0],      # the whole image: the smallest scale
                         [0.0, 0.0, 0.25, 1.0]]])   # 0.25 of the area: 224 px a side at 448
    got = frcnn.closest_scale(rois, (224, 448, 1200)).numpy()
    assert got.tolist() == [[1, 2, 0, 1]]


def test_the_multi_scale_test_pools_each_window_from_its_scale(tmp_path):
    """With ``test_scales``, a window's pooled vector is the single-scale model's at the
    scale the rule picks; the TFLite file agrees."""
    from tfzoo.export import export_tflite, load_model

    keras.utils.set_random_seed(0)
    multi = _tiny(test_scales=(64, 448))
    single = _tiny(image_size=448)
    single.set_weights(multi.get_weights())  # the same layers and weights at one scale
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    rois = np.zeros((1, 24, 4), np.float32)
    rois[0, 0] = [0.1, 0.1, 0.6, 0.6]  # 224 px a side at 448: pooled at 448
    rois[0, 1] = [0.0, 0.0, 1.0, 1.0]  # 64 px at 64, 448 at 448: pooled at 64
    x = {"images": image, "proposals": rois}
    pooled = multi.stage_features(x)["pool5"].numpy()
    at_448 = single.stage_features({"images": tf.image.resize(image, (448, 448)).numpy(),
                                    "proposals": rois})["pool5"].numpy()
    same = _tiny()  # the same weights at the input size
    same.set_weights(multi.get_weights())
    np.testing.assert_allclose(pooled[0, 0], at_448[0, 0], atol=1e-4)
    np.testing.assert_allclose(pooled[0, 1], same.stage_features(x)["pool5"].numpy()[0, 1], atol=1e-4)
    model = load_model(export_tflite(multi, str(tmp_path / "multi.tflite"), raw_outputs=True))
    np.testing.assert_allclose(model.raw_outputs(x)[frcnn.CLASS_LOGITS], multi(x)[frcnn.CLASS_LOGITS].numpy(),
                               atol=1e-4)
    with pytest.raises(ValueError, match="test_scales"):
        MODELS["spp_net"].config.replace(test_scales=(16,))
