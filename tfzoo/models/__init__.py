"""The zoo's one registry: ``MODELS`` maps each preset name to a :class:`~tfzoo.models.base.Preset`
(its detector class, config, family, kind and whether it is a CPU preset), built from the
detector classes' ``presets``. ``MODELS[name](**overrides)`` builds one; ``tfzoo.build_model``,
``tfzoo train``, the demo, the recipes and export all look presets up here.
"""
from tfzoo.models import fast_rcnn, faster_rcnn, rcnn, retinanet, spp_net, ssd, yolo, yolov1
from tfzoo.models.base import Preset, model_table

__all__ = ["DETECTORS", "MODELS", "Preset", "model_table"]

#: Detector classes of the zoo, in the order ``tfzoo list`` shows them.
DETECTORS = (rcnn.RCNN, spp_net.SPPNet, fast_rcnn.FastRCNN, faster_rcnn.FasterRCNN, retinanet.RetinaNet, ssd.SSD,
             yolov1.YOLOv1, yolo.YOLOv2, yolo.YOLOv3)
MODELS = model_table(*DETECTORS)
