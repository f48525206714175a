"""torchvision's side of :func:`tfzoo.convert.torchvision.check_retinanet`, run as a script
in its own process: ``python torchvision_reference.py IN.npz OUT.npz``.

torchvision imported into a process that has loaded TensorFlow crashes it (TF 2.21,
torchvision 0.29: a segmentation fault in torchvision's import), so the reference runs
apart, importing nothing of tfzoo (whose package imports TensorFlow). ``IN.npz`` holds the
state dict (``state/NAME`` entries), the images ``[N, S, S, 3]`` (RGB pixels) and the
settings; ``OUT.npz`` receives per image the backbone maps C3-C5, the raw head outputs
and the detections (boxes x1 y1 x2 y2 in pixels, scores, torchvision labels).
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
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    tracked = any(k.endswith("num_batches_tracked") for k in state)
    trunk = resnet50(norm_layer=torch.nn.BatchNorm2d if tracked else FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(trunk, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, state["head.classification_head.cls_logits.weight"].shape[0] // 9)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            module.eps = bn_eps
    return model.eval()


def main(source, target):
    import torch

    data = np.load(source)
    state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
    images, size = data["images"], int(data["image_size"])
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
