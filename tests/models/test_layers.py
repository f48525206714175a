"""tfzoo.layers: FusedBatchNormalization against keras.layers.BatchNormalization, backbones.with_batchnorm(drop_conv_bias=True), dtype_policy."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfzoo
from tfzoo import backbones
from tfzoo.backbones.applications import APPLICATIONS
from tfzoo.layers import FusedBatchNormalization


def _pair(shape, **kwargs):
    """A Keras and a fused batch norm with the same random weights and moving statistics."""
    reference, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    channels = shape[-1]
    weights = [rng.normal(size=channels).astype("float32") for _ in range(len(reference.weights))]
    weights[-1] = rng.uniform(0.5, 2.0, size=channels).astype("float32")  # moving variance > 0
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _run(layer, x, upstream, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    return y, tape.gradient(loss, [x] + layer.trainable_variables)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9, "epsilon": 1.001e-5}, {"center": False, "scale": False}])
def test_fused_equals_keras_batch_norm(training, kwargs):
    x = tf.random.stateless_normal([4, 9, 7, 6], seed=[1, 2]) * 3.0 + 1.5
    upstream = tf.random.stateless_normal(x.shape, seed=[3, 4])
    reference, fused = _pair(x.shape, **kwargs)
    y_ref, grads_ref = _run(reference, x, upstream, training)
    y, grads = _run(fused, x, upstream, training)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), atol=2e-5)
    assert len(grads) == len(grads_ref)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=1e-4)
    # The moving statistics move the same way (the biased batch variance), or not at all.
    for got, want in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if training:
        assert not np.allclose(fused.moving_mean.numpy(), _pair(x.shape, **kwargs)[1].moving_mean.numpy())


def test_fused_batch_norm_is_one_fused_op_in_the_graph():
    layer = FusedBatchNormalization()
    layer.build([2, 4, 4, 3])
    for training in (True, False):
        graph = tf.function(lambda x, t=training: layer(x, training=t)).get_concrete_function(
            tf.TensorSpec([2, 4, 4, 3])).graph
        ops = {op.type for op in graph.get_operations()}
        assert "FusedBatchNormV3" in ops and "Rsqrt" not in ops


def test_fused_batch_norm_under_mixed_precision_keeps_float32_statistics():
    x = tf.random.stateless_normal([2, 5, 5, 4], seed=[5, 6]) * 2.0 + 1.0
    reference, fused = _pair(x.shape)
    want = reference(x, training=True)
    layer = FusedBatchNormalization.from_config({**fused.get_config(), "dtype": "mixed_bfloat16"})
    layer.build(x.shape)
    layer.set_weights(_pair(x.shape)[1].get_weights())
    got = layer(tf.cast(x, tf.bfloat16), training=True)
    assert got.dtype == tf.bfloat16 and layer.moving_mean.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want.numpy(), atol=0.05)
    np.testing.assert_allclose(layer.moving_mean.numpy(), reference.moving_mean.numpy(), atol=0.02)


def test_fused_batch_norm_falls_back_where_the_fused_op_does_not_apply():
    x = tf.random.stateless_normal([8, 5], seed=[7, 8])  # 2-D: not a feature map
    upstream = tf.ones_like(x)
    reference, fused = _pair(x.shape)
    for training in (True, False):
        np.testing.assert_allclose(_run(fused, x, upstream, training)[0].numpy(),
                                   _run(reference, x, upstream, training)[0].numpy(), atol=1e-5)
    channels_first = FusedBatchNormalization(axis=1)
    assert not channels_first._fused(tf.zeros([2, 3, 4, 4]), None)


def test_fused_batch_norm_serializes_in_safe_mode(tmp_path):
    inputs = keras.Input([6, 6, 3])
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.9, name="bn")(inputs))
    model.get_layer("bn").set_weights(_pair([1, 6, 6, 3])[1].get_weights())
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization and loaded.get_layer("bn").momentum == 0.9
    x = tf.random.stateless_normal([2, 6, 6, 3], seed=[9, 9])
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_backbones_use_fused_batch_norm_and_keep_the_application_weights(name, monkeypatch):
    size = 64
    constructor = getattr(keras.applications, {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet50"}[name])
    kwargs = {"alpha": 0.35} if name == "mobilenet_v2" else {}
    keras.utils.set_random_seed(3)
    built = []

    def recording(*args, **kw):  # the application the backbone starts from
        built.append(constructor(*args, **kw))
        return built[-1]

    monkeypatch.setattr(keras.applications, constructor.__name__, recording)
    backbone = backbones.build_backbone(name, size, weights=None, batchnorm_momentum=0.95, **kwargs)
    app, = built
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is FusedBatchNormalization for layer in norms)
    assert {layer.momentum for layer in norms} == {0.95}
    # The same weights, and in inference the same features as the application.
    by_name = {w.path: w.numpy() for w in app.weights}
    assert all(np.array_equal(by_name[w.path], w.numpy()) for w in backbone.weights)
    x = tf.random.stateless_uniform([1, size, size, 3], seed=[1, 1], minval=-1.0, maxval=1.0)
    features = backbone(x, training=False)
    layer_names = APPLICATIONS[name][1]
    reference = keras.Model(app.input, {k: app.get_layer(layer_names[k]).output for k in features})(x)
    assert sorted(features) == ["C3", "C4", "C5"]
    for key in features:
        np.testing.assert_allclose(features[key].numpy(), reference[key].numpy(), rtol=1e-3, atol=1e-3)
    # And back: a plain-Keras copy (the benchmarks' peer) holds the same weights and features.
    plain = backbones.with_batchnorm(backbone, keras.layers.BatchNormalization)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in plain.layers)
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), backbone.get_weights()))
    plain_features = plain(x, training=False)
    for key in features:
        np.testing.assert_allclose(plain_features[key].numpy(), features[key].numpy(), rtol=1e-3, atol=1e-3)


def test_detector_backbones_use_fused_batch_norm():
    model = tfzoo.build_model("retinanet_mobile", num_classes=2, image_size=64, backbone_weights=None,
                              backbone_alpha=0.35, fpn_channels=8, head_channels=8, head_convs=1)
    norms = [layer for layer in model.get_layer("backbone").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)


def test_dtype_policy_scopes_layer_creation_and_restores():
    from tfzoo.layers import dtype_policy

    before = keras.mixed_precision.global_policy().name
    with dtype_policy("mixed_bfloat16") as name:
        assert name == "mixed_bfloat16"
        inside = keras.layers.Dense(2)
    assert inside.compute_dtype == "bfloat16" and inside.variable_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == before
    with dtype_policy(None) as name:
        assert name == before
        assert keras.layers.Dense(2).compute_dtype == keras.mixed_precision.global_policy().compute_dtype
    with pytest.raises(ValueError, match="dtype policy must be one of"):
        with dtype_policy("float64"):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with dtype_policy("mixed_float16"):
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == before


def _conv_bn_model(seed=0):
    """conv(bias) -> BN -> relu; conv(bias) -> two consumers; conv(bias) -> BN (random weights)."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    a = FusedBatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(4, 1, name="b")(a)  # feeds a batch norm and an add: keeps its bias
    c = keras.layers.Add()([FusedBatchNormalization(name="b_bn")(b), b])
    d = keras.layers.Conv2D(5, 1, name="d")(c)
    d = FusedBatchNormalization(center=False, name="d_bn")(d)
    model = keras.Model(inputs, d)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[-1] = np.abs(weights[-1]) + 0.5
        layer.set_weights(weights)
    return model


def test_dropped_conv_biases_move_into_the_moving_means():
    model = _conv_bn_model()
    copy = backbones.with_batchnorm(model, drop_conv_bias=True)
    assert [layer.use_bias for layer in copy.layers if isinstance(layer, keras.layers.Conv2D)] == [False, True, False]
    for conv, norm in (("a", "a_bn"), ("d", "d_bn")):
        np.testing.assert_allclose(copy.get_layer(norm).moving_mean.numpy(),
                                   model.get_layer(norm).moving_mean.numpy() - model.get_layer(conv).bias.numpy())
    x = tf.random.stateless_normal([4, 8, 8, 3], seed=[0, 5])
    np.testing.assert_allclose(copy(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-4)
    # Training mode: the same output and kernel gradients; each moving mean moves the same way.
    outputs = []
    for net in (model, copy):
        with tf.GradientTape() as tape:
            y = net(x, training=True)
            loss = tf.reduce_sum(y * tf.range(5, dtype=tf.float32))
        outputs.append((y, tape.gradient(loss, net.get_layer("a").kernel)))
    np.testing.assert_allclose(outputs[1][0].numpy(), outputs[0][0].numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs[1][1].numpy(), outputs[0][1].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(copy.get_layer("a_bn").moving_mean.numpy(),
                               model.get_layer("a_bn").moving_mean.numpy() - model.get_layer("a").bias.numpy(),
                               atol=1e-5)
    again = backbones.with_batchnorm(copy, drop_conv_bias=True)  # nothing left to fold
    assert [layer.use_bias for layer in again.layers if isinstance(layer, keras.layers.Conv2D)] == [False, True, False]
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), copy.get_weights()))
    # One pass can swap the batch-norm class too: the benchmarks' plain-Keras peer.
    plain = backbones.with_batchnorm(model, keras.layers.BatchNormalization, drop_conv_bias=True)
    assert {type(layer) for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)} == {
        keras.layers.BatchNormalization}
    np.testing.assert_allclose(plain(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-4)


def test_resnet_backbone_convolutions_before_batch_norm_have_no_bias():
    backbone = backbones.build_backbone("resnet50", 64, weights=None)
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(layer.use_bias for layer in convs)
    # ... and they are tfzoo.layers.Conv2D (the grouped CPU inference path where it applies)
    assert all(type(layer) is tfzoo.layers.Conv2D for layer in convs)


def test_with_batchnorm_swaps_the_convolution_class_and_keeps_the_weights():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    model = keras.Model(inputs, outputs)
    copy = backbones.with_batchnorm(model, conv_class=tfzoo.layers.Conv2D)
    assert type(copy.get_layer("c1")) is tfzoo.layers.Conv2D
    assert type(copy.get_layer("dw")) is keras.layers.DepthwiseConv2D
    x = np.random.default_rng(4).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(copy(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


# --- Conv2D: grouped inference path on CPU ------------------------------------------


def _grouped_convolutions(fn, *args):
    """Conv2D ops of ``fn``'s graph whose input has more channels than the kernel expects."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [op.name for op in graph.get_operations()
            if op.type in ("Conv2D", "_FusedConv2D") and op.inputs[0].shape[-1] != op.inputs[1].shape[2]]


def _conv_pair(filters=256, channels=256):
    ours = tfzoo.layers.Conv2D(filters, 3, padding="same", activation="relu", name="ours")
    stock = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="stock")
    ours.build((None, None, None, channels))
    stock.build((None, None, None, channels))
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.1, (3, 3, channels, filters)).astype(np.float32),
               rng.normal(0, 0.1, (filters,)).astype(np.float32)]
    ours.set_weights(weights)
    stock.set_weights(weights)
    return ours, stock


def test_conv2d_grouped_inference_equals_the_plain_convolution():
    ours, stock = _conv_pair()
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 32, 32, 256)).astype(np.float32))
    want = stock(x).numpy()
    np.testing.assert_allclose(ours(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x, training=True).numpy(), want, rtol=1e-5, atol=1e-5)
    inference = _grouped_convolutions(lambda t: ours(t, training=False), x)
    if tfzoo.layers._grouped_inference_host():
        assert len(inference) == 1  # the grouped form is what runs on this machine
    else:
        assert inference == []
    # Never in training, for batches other than a static 1, below 32x32, for other channel
    # counts, or for a portable trace.
    assert _grouped_convolutions(lambda t: ours(t, training=True), x) == []
    assert _grouped_convolutions(lambda t: ours(t, training=False), tf.concat([x, x], 0)) == []
    assert _grouped_convolutions(lambda t: ours(t, training=False), tf.TensorSpec([None, 32, 32, 256])) == []
    assert _grouped_convolutions(lambda t: ours(t, training=False), x[:, :16, :16]) == []
    for filters, channels in ((192, 192), (320, 320), (512, 256)):
        other, _ = _conv_pair(filters, channels)
        assert _grouped_convolutions(lambda t: other(t, training=False), tf.TensorSpec([1, 32, 32, channels])) == []
    big, _ = _conv_pair(512, 512)  # 512 channels: from 16x16 on
    expected = 1 if tfzoo.layers._grouped_inference_host() else 0
    assert len(_grouped_convolutions(lambda t: big(t, training=False), tf.TensorSpec([1, 16, 16, 512]))) == expected
    assert _grouped_convolutions(lambda t: big(t, training=False), tf.TensorSpec([1, 8, 8, 512])) == []
    model = keras.Sequential([keras.Input((32, 32, 256)), ours])
    with tfzoo.layers.portable_convolutions(model):
        assert _grouped_convolutions(lambda t: model(t, training=False), x) == []
    assert ours.grouped_inference


def test_conv2d_gradients_are_the_plain_convolutions():
    ours, stock = _conv_pair()
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 32, 32, 256)).astype(np.float32))
    grads = []
    for layer in (ours, stock):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, layer.trainable_weights)])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_dilated_conv2d_is_one_conv_op_equal_to_keras(padding, tmp_path):
    """A dilated ``tfzoo.layers.Conv2D`` (SSD's fc6) runs TF's Conv2D with its dilation
    instead of Keras' SpaceToBatchND / conv / BatchToSpaceND: the same outputs and
    gradients as the stock layer, in training and inference, float32 and bfloat16, and a
    builtin CONV_2D in TFLite."""
    rng = np.random.default_rng(4)
    ours = tfzoo.layers.Conv2D(6, 3, padding=padding, dilation_rate=3, activation="relu")
    stock = keras.layers.Conv2D(6, 3, padding=padding, dilation_rate=3, activation="relu")
    weights = [rng.normal(0, 0.3, (3, 3, 5, 6)).astype(np.float32), rng.normal(0, 0.1, 6).astype("float32")]
    for layer in (ours, stock):
        layer.build((None, None, None, 5))
        layer.set_weights(weights)
    x = tf.constant(rng.normal(size=(2, 13, 11, 5)).astype(np.float32))
    graph = tf.function(lambda t: ours(t, training=False)).get_concrete_function(x).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "SpaceToBatchND" not in op_types and op_types & {"Conv2D", "_FusedConv2D"}
    grads = []
    for layer in (ours, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)
            loss = tf.reduce_sum(out ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_weights])])
        np.testing.assert_allclose(layer(x, training=False).numpy(), stock(x).numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # bfloat16 compute: the kernel is cast like Keras casts it
    mixed = tfzoo.layers.Conv2D(6, 3, padding=padding, dilation_rate=3, dtype="mixed_bfloat16")
    mixed.build((None, None, None, 5))
    mixed.set_weights(stock.get_weights())
    assert mixed(x).dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(tf.nn.relu(mixed(x)), tf.float32).numpy(), stock(x).numpy(), atol=0.1)
    # TFLite: one builtin CONV_2D with the dilation, the same outputs
    from tfzoo.export.tflite import non_builtin_ops, op_names

    inputs = keras.Input((13, 11, 5), batch_size=1)
    model = keras.Model(inputs, ours(inputs))
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    assert "CONV_2D" in op_names(flat) and not non_builtin_ops(op_names(flat))
    assert "SPACE_TO_BATCH_ND" not in op_names(flat)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy()[:1])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, stock(x[:1]).numpy(), rtol=1e-4, atol=1e-4)


def test_fpn_from_c2_with_a_pooled_p6_and_the_retinanet_form():
    """FPN's Faster R-CNN pyramid: P2-P5 from C2-C5 top-down, P6 = P5 subsampled by 2; the
    RetinaNet form (C3-C5, P6/P7 convolutions) keeps its layer names."""
    sizes = {2: 16, 3: 8, 4: 4, 5: 2}
    c = {level: keras.Input((side, side, 3 + level)) for level, side in sizes.items()}
    pyramid = tfzoo.layers.fpn([c[2], c[3], c[4], c[5]], 8, min_level=2, max_level=6, extra="pool")
    assert [tuple(p.shape[1:3]) for p in pyramid] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    model = keras.Model(list(c.values()), pyramid)
    rng = np.random.default_rng(0)
    outs = model([rng.normal(size=(1, side, side, 3 + level)).astype("float32") for level, side in sizes.items()])
    np.testing.assert_array_equal(outs[4].numpy(), outs[3].numpy()[:, ::2, ::2])
    retina = tfzoo.layers.fpn([c[3], c[4], c[5]], 8, min_level=3, max_level=7, name="r")
    names = {layer.name for layer in keras.Model([c[3], c[4], c[5]], retina).layers}
    assert {"r_lateral_p3", "r_output_p3", "r_p6", "r_p7"} <= names and "r_lateral_p2" not in names
    with pytest.raises(ValueError, match="P6 at most"):
        tfzoo.layers.fpn([c[2], c[3], c[4], c[5]], 8, min_level=2, max_level=7, extra="pool")
