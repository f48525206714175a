"""tfzoo.backbones: named feature maps; the basic-block ResNets (resnet10, resnet18) and the
Darknets (darknet19, darknet53): layout against the papers' tables, one block against NumPy."""
import numpy as np
import keras
import pytest
import tensorflow as tf

from tfzoo import backbones
from tfzoo.layers import FusedBatchNormalization


def _convs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


@pytest.mark.parametrize("name, blocks", [("resnet10", 1), ("resnet18", 2)])
def test_basic_resnet_layout(name, blocks):
    model = backbones.build_backbone(name, (64, 96), weights=None, alpha=0.5, batchnorm_momentum=0.9)
    assert model.name == "backbone" and name in backbones.BACKBONES and backbones.PREPROCESSING[name] == "tf"
    # Strides 8, 16, 32; widths 128, 256, 512 at alpha 0.5.
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == {
        "C3": (8, 12, 64), "C4": (4, 6, 128), "C5": (2, 3, 256)}
    convs = _convs(model)
    # Two stem convs, two per block, one projection where a stage changes shape (stages 2-4).
    assert len(convs) == 2 + 2 * 4 * blocks + 3
    assert not any(c.use_bias for c in convs)
    assert [c.filters for c in convs[:2]] == [16, 32] and [c.strides for c in convs[:2]] == [(2, 2), (2, 2)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(convs) and all(type(n) is FusedBatchNormalization for n in norms)
    assert {n.momentum for n in norms} == {0.9}
    assert tuple(backbones.build_backbone(name, 64, alpha=1.0).output["C5"].shape[1:]) == (2, 2, 512)


def _conv_same(x, kernel, stride):
    """Slow NumPy 'same' convolution of one image [H, W, C] (TensorFlow's padding split)."""
    k = kernel.shape[0]
    h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
    return out


def _norm(x, layer):
    gamma, beta, mean, variance = (w.numpy() for w in (layer.gamma, layer.beta, layer.moving_mean,
                                                       layer.moving_variance))
    return gamma * (x - mean) / np.sqrt(variance + layer.epsilon) + beta


def test_a_downsampling_block_is_the_residual_formula_in_inference():
    """stage2_block1: relu(bn(conv3x3(relu(bn(conv3x3/2(x))))) + bn(conv1x1/2(x)))."""
    keras.utils.set_random_seed(5)
    model = backbones.build_backbone("resnet10", 64, weights=None, alpha=0.25)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # moving statistics away from 0 / 1, so that the test sees them
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape))
    block_in = model.get_layer("stage1_block1_out").output
    block = keras.Model(model.input, [block_in, model.get_layer("stage2_block1_out").output])
    image = tf.random.stateless_uniform([1, 64, 64, 3], seed=[2, 3], minval=-1.0, maxval=1.0)
    x, got = (t.numpy()[0].astype(np.float64) for t in block(image, training=False))

    def conv_bn(inputs, name, stride):
        kernel = model.get_layer(f"{name}_conv").kernel.numpy().astype(np.float64)
        return _norm(_conv_same(inputs, kernel, stride), model.get_layer(f"{name}_bn"))

    y = np.maximum(conv_bn(x, "stage2_block1_1", 2), 0.0)
    y = conv_bn(y, "stage2_block1_2", 1)
    want = np.maximum(y + conv_bn(x, "stage2_block1_proj", 2), 0.0)
    assert got.shape == want.shape == (8, 8, 32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_basic_resnet_weights_round_trip_and_clear_errors(tmp_path):
    keras.utils.set_random_seed(1)
    model = backbones.build_backbone("resnet10", 32, alpha=0.25)
    path = str(tmp_path / "resnet10.weights.h5")
    model.save_weights(path)
    keras.utils.set_random_seed(2)
    again = backbones.build_backbone("resnet10", 32, weights=path, alpha=0.25)
    x = tf.random.stateless_uniform([1, 32, 32, 3], seed=[0, 1])
    got, want = again(x), model(x)
    assert sorted(got) == ["C3", "C4", "C5"]
    for key in got:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    with pytest.raises(ValueError, match="resnet10 is tfzoo's own and has no ImageNet weights"):
        backbones.build_backbone("resnet10", 32, weights="imagenet")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        backbones.build_backbone("resnet18", 32, alpha=0.0)
    with pytest.raises(ValueError, match="alpha applies to mobilenet_v2, resnet10, resnet18, darknet19, darknet53, darknet_tiny, yolov1, fast_yolo only, not resnet50"):
        backbones.build_backbone("resnet50", 32, alpha=0.5)
    with pytest.raises(ValueError, match="known backbones: darknet19, darknet53, darknet_tiny, fast_yolo, mobilenet_v2, resnet10, resnet101"):
        backbones.build_backbone("vgg", 32)
    with pytest.raises(ValueError, match="darknet19 has no feature map\\(s\\) C2; it has C3, C4, C5"):
        backbones.build_backbone("darknet19", 64, features=("C2", "C5"))
    with pytest.raises(ValueError, match="at least 32 on both sides, got 16x64"):
        backbones.build_backbone("resnet10", (16, 64))


@pytest.mark.parametrize("name, size, expected", [
    # Any size a stride allows, not only multiples of 32: "same" padding rounds up.
    ("resnet10", (300, 300), {"C2": (75, 75), "C3": (38, 38), "C4": (19, 19), "C5": (10, 10)}),
    # keras.applications' VGG-16 pools with floor: conv4_3 is 37 x 37 at 300 (the paper's Caffe
    # model pools with ceil and gets 38; SSD's issue deals with it).
    ("vgg16", (300, 300), {"C1": (150, 150), "C2": (75, 75), "C3": (37, 37), "C4": (18, 18), "C5": (9, 9)}),
    ("darknet19", (416, 416), {"C3": (52, 52), "C4": (26, 26), "C5": (13, 13)}),
    ("darknet53", (416, 416), {"C3": (52, 52), "C4": (26, 26), "C5": (13, 13)}),
])
def test_named_feature_maps_at_their_strides(name, size, expected):
    model = backbones.build_backbone(name, size, features=backbones.FEATURES[name])
    assert {k: tuple(v.shape[1:3]) for k, v in model.output.items()} == expected


def test_darknet19_is_yolov2s_table_6():
    """18 convolutions (the classifier's 19th left out), filters and kernels in the paper's
    order, 5 max-pools; C4 is the 26 x 26 x 512 passthrough source at 416."""
    model = backbones.build_backbone("darknet19", 416, features=("C3", "C4", "C5"))
    convs = _convs(model)
    table = [(32, 3), (64, 3), (128, 3), (64, 1), (128, 3), (256, 3), (128, 1), (256, 3), (512, 3), (256, 1),
             (512, 3), (256, 1), (512, 3), (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]
    assert [(c.filters, c.kernel_size[0]) for c in convs] == table
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 5
    assert tuple(model.output["C4"].shape[1:]) == (26, 26, 512)
    assert not any(c.use_bias for c in convs) and backbones.PREPROCESSING["darknet19"] == "unit"
    leaky = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert len(leaky) == 18 and {round(float(layer.negative_slope), 6) for layer in leaky} == {0.1}


def test_darknet53_is_yolov3s_table_1():
    """52 convolutions (with the classifier, 53): the stem, five stride-2 convolutions and
    1, 2, 8, 8, 4 residual blocks of a 1x1 halving and a 3x3 restoring the channels."""
    model = backbones.build_backbone("darknet53", 256)
    convs = _convs(model)
    assert len(convs) == 52
    assert [c.filters for c in convs if c.strides == (2, 2)] == [64, 128, 256, 512, 1024]
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 1 + 2 + 8 + 8 + 4
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == {
        "C3": (32, 32, 256), "C4": (16, 16, 512), "C5": (8, 8, 1024)}
    # Published size: Darknet-53 has 40.6 million parameters without its classifier
    # (41.6 M with the 1024 x 1000 fully connected layer).
    weights = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert 40.5e6 < weights < 40.7e6


def test_darknet_strided_convolutions_pad_like_darknet():
    """Output i of a stride-2 3x3 convolution sees input rows 2i-1..2i+1 (Darknet pads one
    pixel on every side), not 2i..2i+2 as Keras' "same" does at an even size."""
    model = backbones.build_backbone("darknet53", 32)
    conv = model.get_layer("down1_conv")
    probe = keras.Model(model.get_layer("stem_leaky").output, conv.output)
    x = np.zeros([1, 32, 32, 32], np.float32)
    x[0, 0, 0, :] = 1.0  # only the top-left input pixel
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[2, 2, :, 0] = 1.0  # output 0 reads its bottom-right tap
    conv.kernel.assign(kernel)
    y = probe(x).numpy()[0, :, :, 0]
    # Darknet: output (0, 0)'s taps are rows/cols -1..1: its bottom-right tap is pixel (1, 1),
    # so (0, 0) is 0; output (0, 0)'s centre tap is pixel (0, 0). With "same" at an even
    # size the bottom-right tap of output (0, 0) would be pixel (2, 2).
    assert y[0, 0] == 0.0
    kernel[2, 2, :, 0], kernel[1, 1, :, 0] = 0.0, 1.0
    conv.kernel.assign(kernel)
    assert probe(x).numpy()[0, 0, 0, 0] == 32.0  # the centre tap sees pixel (0, 0)
