"""torchvision's side of :func:`tfzoo.convert.torchvision.check_retinanet`, run as a script
in its own process: ``python torchvision_reference.py IN.npz OUT.npz``.

torchvision imported into a process that has loaded TensorFlow crashes it (TF 2.21,
torchvision 0.29: a segmentation fault in torchvision's import), so the reference runs
apart, importing nothing of tfzoo (whose package imports TensorFlow). ``IN.npz`` holds the
state dict (``state/NAME`` entries), the images ``[N, S, S, 3]`` (RGB pixels) and the
settings (``architecture``: ``retinanet_resnet50_fpn``, ``fasterrcnn_resnet50_fpn`` or
``ssd300_vgg16``);
``OUT.npz`` receives per image the backbone maps, the raw head outputs and the detections
(boxes x1 y1 x2 y2 in pixels, scores, torchvision labels).
"""
import sys

import numpy as np


def retinanet(state, bn_eps):
    """``retinanet_resnet50_fpn`` holding ``state``: ``BatchNorm2d`` where the state dict has
    ``num_batches_tracked`` entries, else ``FrozenBatchNorm2d``; every epsilon ``bn_eps``."""
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=_norm_layer(state)), 5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, state["head.classification_head.cls_logits.weight"].shape[0] // 9)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return _set_eps(model, bn_eps)


def _norm_layer(state):
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    return torch.nn.BatchNorm2d if any(k.endswith("num_batches_tracked") for k in state) else FrozenBatchNorm2d


def _set_eps(model, bn_eps):
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            module.eps = bn_eps
    return model.eval()


def faster_rcnn(state, bn_eps):
    """``fasterrcnn_resnet50_fpn`` holding ``state`` (batch norms as :func:`retinanet`'s)."""
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=_norm_layer(state)), 5)
    model = FasterRCNN(backbone, state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return _set_eps(model, bn_eps)


def faster_rcnn_outputs(model, pixels, size, out, i):
    """The backbone maps C2-C5, the RPN's raw outputs (levels concatenated, location-major,
    anchors inner, as tfzoo's), the proposals, the RoI head's raw outputs on them and the
    detections."""
    import torch
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    with torch.no_grad():
        images, _ = model.transform([pixels])
        body = model.backbone.body(images.tensors)
        features = model.backbone.fpn(body)
        objectness, deltas = model.rpn.head(list(features.values()))
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals, _ = model.rpn(images, features)
        pooled = model.roi_heads.box_roi_pool(features, proposals, images.image_sizes)
        class_logits, box_regression = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        found = model([pixels])[0]
    for name, value in zip(("C2", "C3", "C4", "C5"), body.values()):
        out[f"{i}/{name}"] = value.numpy().transpose(0, 2, 3, 1)
    out[f"{i}/rpn_objectness"] = objectness.numpy().reshape(1, -1)
    out[f"{i}/rpn_deltas"] = deltas.numpy().reshape(1, -1, 4)
    out[f"{i}/proposals"] = proposals[0].numpy()
    out[f"{i}/class_logits"] = class_logits.numpy()
    out[f"{i}/box_regression"] = box_regression.numpy()
    for key in ("boxes", "scores", "labels"):
        out[f"{i}/{key}"] = found[key].numpy()


def ssd(state):
    """``ssd300_vgg16`` holding ``state``."""
    import torch
    from torchvision.models.detection import ssd300_vgg16

    anchors = state["head.regression_head.module_list.0.weight"].shape[0] // 4
    model = ssd300_vgg16(weights=None, weights_backbone=None,
                         num_classes=state["head.classification_head.module_list.0.weight"].shape[0] // anchors)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model.eval()


def ssd_outputs(model, pixels, out, i):
    """conv4_3 and fc7 (before the L2 normalization), the raw head outputs, the detections."""
    import torch

    with torch.no_grad():
        images, _ = model.transform([pixels])
        conv4_3 = model.backbone.features(images.tensors)
        fc7 = model.backbone.extra[0](conv4_3)
        head = model.head(list(model.backbone(images.tensors).values()))
        found = model([pixels])[0]
    out[f"{i}/conv4_3"] = conv4_3.numpy().transpose(0, 2, 3, 1)
    out[f"{i}/fc7"] = fc7.numpy().transpose(0, 2, 3, 1)
    out[f"{i}/cls_logits"] = head["cls_logits"].numpy()
    out[f"{i}/bbox_regression"] = head["bbox_regression"].numpy()
    for key in ("boxes", "scores", "labels"):
        out[f"{i}/{key}"] = found[key].numpy()


def main(source, target):
    import torch

    data = np.load(source)
    state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
    images, size = data["images"], int(data["image_size"])
    if str(data["architecture"]) == "ssd300_vgg16":
        model = ssd(state)
        model.score_thresh, model.topk_candidates = float(data["score_threshold"]), 10**9
        model.detections_per_img = 10**9
        out = {}
        for i, image in enumerate(images):
            ssd_outputs(model, torch.from_numpy(image.transpose(2, 0, 1).copy() / 255.0).float(), out, i)
        np.savez(target, **out)
        return
    if str(data["architecture"]) == "fasterrcnn_resnet50_fpn":
        model = faster_rcnn(state, float(data["bn_eps"]))
        model.transform.min_size, model.transform.max_size = (size,), size
        model.roi_heads.score_thresh = float(data["score_threshold"])
        model.roi_heads.detections_per_img = 10**9
        model.rpn._pre_nms_top_n["testing"] = 10**9  # as check_faster_rcnn's tfzoo side
        out = {}
        for i, image in enumerate(images):
            faster_rcnn_outputs(model, torch.from_numpy(image.transpose(2, 0, 1).copy() / 255.0).float(), size, out, i)
        np.savez(target, **out)
        return
    model = retinanet(state, float(data["bn_eps"]))
    model.transform.min_size, model.transform.max_size = (size,), size  # no resizing
    model.score_thresh, model.topk_candidates, model.detections_per_img = float(data["score_threshold"]), 10**9, 10**9
    out = {}
    for i, image in enumerate(images):
        pixels = torch.from_numpy(image.transpose(2, 0, 1).copy() / 255.0).float()
        with torch.no_grad():
            batch = model.transform([pixels])[0].tensors
            body = model.backbone.body(batch)
            head = model.head(list(model.backbone.fpn(body).values()))
            found = model([pixels])[0]
        for name, value in zip(("C3", "C4", "C5"), body.values()):
            out[f"{i}/{name}"] = value.numpy().transpose(0, 2, 3, 1)
        out[f"{i}/cls_logits"] = head["cls_logits"].numpy()
        out[f"{i}/bbox_regression"] = head["bbox_regression"].numpy()
        for key in ("boxes", "scores", "labels"):
            out[f"{i}/{key}"] = found[key].numpy()
    np.savez(target, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
