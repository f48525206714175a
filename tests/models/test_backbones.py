"""tfzoo.backbones' basic-block ResNets (resnet10, resnet18): layout, and one block against NumPy."""
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
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(8, 12, 64), (4, 6, 128), (2, 3, 256)]
    convs = _convs(model)
    # Two stem convs, two per block, one projection where a stage changes shape (stages 2-4).
    assert len(convs) == 2 + 2 * 4 * blocks + 3
    assert not any(c.use_bias for c in convs)
    assert [c.filters for c in convs[:2]] == [16, 32] and [c.strides for c in convs[:2]] == [(2, 2), (2, 2)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(convs) and all(type(n) is FusedBatchNormalization for n in norms)
    assert {n.momentum for n in norms} == {0.9}
    assert [tuple(o.shape[1:]) for o in backbones.build_backbone(name, 64, alpha=1.0).outputs][-1] == (2, 2, 512)


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
    for a, b in zip(model(x), again(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="resnet10, resnet18\\) have no ImageNet weights"):
        backbones.build_backbone("resnet10", 32, weights="imagenet")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        backbones.build_backbone("resnet18", 32, alpha=0.0)
    with pytest.raises(ValueError, match="alpha applies to mobilenet_v2, resnet10, resnet18 only, not resnet50"):
        backbones.build_backbone("resnet50", 32, alpha=0.5)
    with pytest.raises(ValueError, match="known backbones: mobilenet_v2, resnet10, resnet101, resnet18, resnet50"):
        backbones.build_backbone("vgg", 32)
