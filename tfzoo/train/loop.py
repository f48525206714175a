"""The ``train`` entry: one run from the config to the final evaluation (see
:mod:`tfzoo.train`)."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
import warnings

import keras
import tensorflow as tf

import tfzoo
import tfzoo.data
import tfzoo.eval
from tfzoo.atomic import save_keras_atomic, write_json_atomic
from tfzoo.data import validate
from tfzoo.optim import WarmupDecaySchedule, make_optimizer, make_schedule
from tfzoo.train.callbacks import (TimeBudget, StopOnNonFiniteLoss, TrainingProgress, _Checkpoint, _epoch_seconds,
                                   _info, _Replan, plan_epochs, warmup_epochs)
from tfzoo.train.config import FROM_CONFIG, _requested_fields, _setting_keys, preset_config, resolve_config
from tfzoo.train.data import _class_names, _load, _specs, count_examples, late_problems, split_exists
from tfzoo.train.distribute import (FLOAT32, STRATEGIES, _workers, is_chief, make_strategy, mixed_policy_name,
                                    optimizer_step, precision)
from tfzoo.train.rundir import (CONFIG_FILE, LOGS_DIR, METRICS_FILE, MODEL_FILE, PLOT_FILE, STATE_FILE, _read_json,
                                _RunDir, _start_over, check_new_run, latest_run_dir, new_run_dir)

#: Images of the training split scored after training, beside val, to tell under- from
#: overfitting (the first ones of the split, without augmentation).
TRAIN_SAMPLE_IMAGES = 200


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: str
    detector: keras.Model
    metrics: dict | None
    epochs: int  # completed epochs (those in model.keras)
    steps: int  # optimizer iterations in model.keras
    stopped: str | None  # why training ended early (non-finite loss, time budget ...), else None
    seconds: float
    finished: bool = False  # the schedule ran to its end
    planned_epochs: int = 0
    steps_per_epoch: int = 0
    history: dict = dataclasses.field(default_factory=dict)  # per-epoch logs (loss, cls_loss ...)
    diagnostics: dict | None = None  # train-sample AP, verdict, confused pairs (also in metrics.json)


class _Run:
    """State shared by the callbacks: the directory, the plan, the evaluation set."""

    def __init__(self, rundir, detector, state, val, verbose, train_data=None, proposal_sets=None):
        self.dir = rundir
        self.train_data = train_data  # (specs, split, class_names) for diagnostics, or None: none
        self.detector = detector
        self.state = state
        self.val = val  # (specs, split, class_names) or None
        self.verbose = verbose
        self.metrics = None
        self.metrics_step = None
        self.evaluator = None  # the val Evaluator of self.metrics (its image records)
        self.diagnostics = None  # what diagnose() found
        self._detect = None
        # (specs, split, limit) -> examples with their proposals (a detector without proposals: none)
        self._proposal_sets = dict(proposal_sets or {})

    def write_state(self, **changes):
        self.state.update(changes)
        write_json_atomic(self.dir.path(STATE_FILE), self.state)

    def record_epoch(self, epoch, logs):
        """Adds ``logs``' finite numbers to ``state["history"]`` as ``{key: [[epoch, value], ...]}``
        (a resumed run keeps the epochs before it and replaces any after)."""
        history = self.state.setdefault("history", {})
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                rows = [row for row in history.get(key, []) if row[0] < epoch]
                history[key] = rows + [[int(epoch), value]]

    def start_clock(self):
        """Training time starts (again, for a resumed run) now: :meth:`training_seconds`."""
        self._seconds_before = float(self.state.get("seconds", 0.0))
        self._clock = time.monotonic()

    def training_seconds(self):
        """Seconds of training over every run of this folder, this one's so far included."""
        if getattr(self, "_clock", None) is None:
            return float(self.state.get("seconds", 0.0))
        return round(self._seconds_before + time.monotonic() - self._clock, 1)

    def checkpoint(self, completed_epochs):
        save_keras_atomic(self.detector, self.dir.path(MODEL_FILE))
        # the seconds too: a run killed after this checkpoint resumes with the budget it has left
        self.write_state(epoch=int(completed_epochs), step=optimizer_step(self.detector),
                         seconds=self.training_seconds())

    def evaluate(self):
        """Scores the detector on the val split, writes metrics.json (chief) and returns them."""
        if self.val is None or not self.dir.chief:
            return None
        step = optimizer_step(self.detector)
        if self.metrics_step == step:
            return self.metrics
        specs, split, names = self.val
        self.metrics, self.evaluator = self._score(self._examples(specs, split), specs, names)
        self.metrics_step = step
        write_json_atomic(self.dir.path(METRICS_FILE), self.metrics)
        return self.metrics

    def _examples(self, specs, split, limit=None):
        """The canonical examples of ``split`` (the first ``limit``), with their proposals
        when the detector takes them."""
        key = (tuple(specs), split, limit)
        if key not in self._proposal_sets:  # fetched once per run: the cache is read, not searched again
            dataset = _load(specs, split)
            if limit is not None:
                dataset = dataset.take(limit)
            self._proposal_sets[key] = with_proposals(dataset, self.detector.config, f"{'+'.join(specs)} [{split}]",
                                                      self.verbose, subset=limit is not None)[0]
        return self._proposal_sets[key]

    def _score(self, dataset, specs, names):
        """``(metrics, evaluator)`` of the detector on ``dataset``."""
        detector = self.detector
        if self._detect is None:
            self._detect = tf.function(detector.detect, input_signature=[detector.detect_spec()])
        return tfzoo.eval.evaluate_detector(
            self._detect, dataset, detector.image_size, names, tfzoo.data.category_ids(specs[0]),
            keep_aspect_ratio=detector.encoder.keep_aspect_ratio, progress=bool(self.verbose),
            return_evaluator=True, input_names=tuple(detector.input_names),
            max_proposals=getattr(detector.config, "max_proposals", 0) or 2000,
        )

    def diagnose(self, specs, split, names):
        """Scores the first :data:`TRAIN_SAMPLE_IMAGES` of the training split beside val, names
        what it sees (:func:`tfzoo.eval.diagnostics.diagnose`), finds the most confused
        class pairs on val, adds it all to metrics.json as ``diagnostics`` and returns the
        report lines (:func:`~tfzoo.eval.diagnostics.report_lines`)."""
        from tfzoo.eval import diagnostics as diag  # noqa: PLC0415

        if not self.dir.chief:
            return []
        _info(self.verbose, f"scoring up to {TRAIN_SAMPLE_IMAGES} images of the training split beside val ...")
        train_metrics, train_evaluator = self._score(self._examples(specs, split, TRAIN_SAMPLE_IMAGES), specs, names)
        val_metrics = self.metrics
        pairs, analysis = [], None
        if self.evaluator is not None:
            analysis = diag.analyze(self.evaluator.image_records(), names)
            pairs = diag.confused_pairs(analysis["confusions"])
        verdict = diag.diagnose(train_metrics["AP50"], val_metrics["AP50"] if val_metrics else None)
        report = {
            **verdict,
            "train_sample": {"split": split, "images": len(train_evaluator.image_ids),
                             **{k: train_metrics[k] for k in ("AP", "AP50", "AR100")},
                             "per_class_AP50": {n: v["AP50"] for n, v in train_metrics["per_class"].items()}},
            "val_recall_by_size": analysis["recall_by_size"] if analysis else None,
            "confused_pairs": pairs,
        }
        if val_metrics is not None:
            self.metrics = dict(val_metrics, diagnostics=report)
            write_json_atomic(self.dir.path(METRICS_FILE), self.metrics)
        self.diagnostics = report
        return diag.report_lines(val_metrics, train_metrics, pairs, verdict, names)

    def plot(self):
        """Writes training.png from ``state["history"]`` (chief only); a failure only warns."""
        from tfzoo.eval import diagnostics as diag  # noqa: PLC0415

        if not self.dir.chief or not self.state.get("history"):
            return None
        final = {}
        if self.metrics is not None:
            final["final val AP50"] = self.metrics.get("AP50")
        if self.diagnostics is not None:
            final["train-sample AP50"] = self.diagnostics["train_sample"]["AP50"]
        try:
            return diag.plot_training(self.state["history"], self.dir.path(PLOT_FILE), final)
        except Exception as error:  # a plot must never fail a finished run
            warnings.warn(f"could not write {PLOT_FILE}: {error}")
            return None

#: Training images :func:`_check_flips` looks at.
MIRROR_CHECK_IMAGES = 300


def _check_flips(config, dataset, names, where, explicit):
    """The config to train with, flips decided: where, mirrored, some classes look like
    others (:mod:`tfzoo.data.mirror`, on the first :data:`MIRROR_CHECK_IMAGES` training
    images), flips would teach the model that they are alike, so a recipe whose flips
    were not asked for explicitly trains without them (said in a warning); one that asks
    for them (``--set flip=true``) keeps them, with the same warning's figures."""
    if not getattr(config, "flip", False) or getattr(config, "augment", "none") == "none":
        return config
    from tfzoo.data import mirror  # noqa: PLC0415

    pairs = mirror.check(dataset, names, limit=MIRROR_CHECK_IMAGES)["mirror_pairs"]
    if not pairs:
        return config
    shown = ", ".join("/".join(p["classes"]) for p in pairs)
    if "flip" in explicit:
        warnings.warn(f"{where}: mirrored, these classes look like each other: {shown}; the horizontal flips "
                      "asked for (flip=true) teach the model they are alike: --no-flip turns them off; "
                      "'tfzoo inspect' shows the figures")
        return config
    warnings.warn(f"{where}: mirrored, these classes look like each other: {shown}; horizontal flips would teach "
                  "the model they are alike, so this run trains without them (--set flip=true keeps them); "
                  "'tfzoo inspect' shows the figures")
    return config.replace(flip=False)


def _split_auto_priors(settings):
    """``(settings without "priors=auto", whether it was there)``."""
    from tfzoo.train import priors  # noqa: PLC0415

    kept = [s for s in settings or () if not (s.partition("=")[0].strip() == "priors"
                                               and s.partition("=")[2].strip() == priors.AUTO)]
    return kept, len(kept) != len(settings or ())


def _check_priors(config, dataset, where, auto, explicit, verbose):
    """The config to train with, its priors decided: ``priors=auto`` (or the config's
    ``fit_priors``, unless priors were set) fits them to the first
    :data:`tfzoo.train.priors.PRIOR_IMAGES` training images; otherwise a YOLO config whose
    priors were not set says when the data's own would fit its boxes better."""
    if not hasattr(config, "priors"):
        if auto:
            raise ValueError(f"{config.name} has no priors: priors=auto applies to the YOLOv2 and YOLOv3 presets")
        return config
    if explicit:
        return config
    auto = auto or config.fit_priors
    from tfzoo.train import priors  # noqa: PLC0415

    sizes = priors.box_sizes(dataset, priors.PRIOR_IMAGES if auto else MIRROR_CHECK_IMAGES * 3)
    if len(sizes) < len(config.priors):
        if auto:
            raise validate.DataError(f"{where}: {len(sizes)} boxes, too few to fit {len(config.priors)} priors")
        return config
    fitted, iou = priors.fit(sizes, len(config.priors))
    default = priors.mean_iou(sizes, config.priors)
    if auto:
        why = " (the preset's fit_priors; --set fit_priors=false keeps its own)" if config.fit_priors else ""
        _info(verbose, f"priors fitted to {len(sizes)} boxes of {where}: mean IoU {iou:.3f} (the preset's "
                       f"{default:.3f}){why}")
        return config.replace(priors=fitted)
    if iou > default + priors.BETTER_BY:
        _info(verbose, f"the preset's priors fit the boxes of {where} at mean IoU {default:.3f}; priors fitted to "
                       f"them reach {iou:.3f}: --set priors=auto uses them ('tfzoo anchors' shows them)")
    return config


def _augment_text(config):
    """``"scale_jitter with horizontal flips (--no-flip turns them off)"`` or ``"... without ..."``."""
    augment = getattr(config, "augment", "none")
    if augment == "none":
        return "none"
    if getattr(config, "flip", True):
        return f"{augment} with horizontal flips (--no-flip turns them off)"
    return f"{augment} without horizontal flips"


def _build(model, config):
    """Builds preset ``model`` with ``config``; ImageNet weights that cannot be downloaded
    fall back to random initialization with a warning."""
    from tfzoo.models import MODELS

    from tfzoo.backbones import WeightsUnavailableError

    try:
        return MODELS[model](**config.to_dict())
    except WeightsUnavailableError as error:
        reason = str(error.__cause__ or error).strip().splitlines()[0]
        warnings.warn(f"could not download the backbone's ImageNet weights ({reason}); training from random "
                      f"initialization (--set backbone_weights=null says so explicitly)")
        return MODELS[model](**config.replace(backbone_weights=None).to_dict())


def _weight_layers(model, prefix=""):
    """``{path: layer}`` of the layers of ``model`` that hold weights, nested models walked
    (``"backbone/conv1_conv"``)."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_weight_layers(layer, f"{prefix}{layer.name}/"))
        elif layer.weights:
            found[prefix + layer.name] = layer
    return found


#: Settings a run started from another model (``init``) takes from that model's config
#: unless set: the box outputs it copies were trained against these.
INIT_KEPT = ("priors", "masks")
#: Settings of a converted model's architecture (tfzoo.convert) that a run started from it
#: takes unless set: without them its weights would land in layers of the same names and
#: shapes that compute something else (torchvision's ResNet in keras.applications').
INIT_ARCHITECTURE = ("backbone", "backbone_weights", "p6_input", "symmetric_padding", "anchor_style",
                     "roi_pool_mode", "roi_aligned", "vgg_normalization", "anchor_steps", "clip_anchor_sizes", "scales")


def _as_field(value):
    """A config value read from JSON with its lists as tuples (the configs' sequences)."""
    return tuple(_as_field(v) for v in value) if isinstance(value, list) else value


def _init_config(config, explicit, verbose):
    """``config`` with the source model's priors and masks (:data:`INIT_KEPT`) unless set,
    and no prior fitting unless asked for: a run that starts from a model (``init``) keeps
    the priors its copied box outputs were trained against."""
    source = config.init
    path = os.path.join(source, CONFIG_FILE) if os.path.isdir(source) else None
    if path and os.path.isfile(path):
        theirs = _read_json(path)
    else:
        weights = os.path.join(source, MODEL_FILE) if os.path.isdir(source) else source
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"init {source}: no model there (a .keras file or a folder holding {MODEL_FILE})")
        theirs = json.loads(keras.saving.load_model(weights, safe_mode=True, compile=False).config.to_json())
    changes = {}
    for key in INIT_KEPT:
        if hasattr(config, key) and key in theirs and key not in explicit:
            value = type(getattr(config, key))(tuple(v) for v in theirs[key])
            if value != getattr(config, key):
                changes[key] = value
    if hasattr(config, "fit_priors") and config.fit_priors and "fit_priors" not in explicit:
        changes["fit_priors"] = False
    if changes:
        kept = [k for k in INIT_KEPT if k in changes] or ["priors"]
        _info(verbose, f"init from {source}: its {' and '.join(kept)} kept, not fitted to the data (the copied box "
                       "outputs were trained against them; --set priors=... or --set fit_priors=true changes that)")
    layout = {}
    for key in INIT_ARCHITECTURE:
        if hasattr(config, key) and key in theirs and key not in explicit and _as_field(theirs[key]) != getattr(config, key):
            layout[key] = _as_field(theirs[key])
    if layout:
        _info(verbose, f"init from {source}: its architecture kept ({', '.join(f'{k}={v}' for k, v in layout.items())})")
    return config.replace(**changes, **layout)


def init_weights(detector, source):
    """Copies the weights of the model at ``source`` (a ``.keras`` file, or a folder holding
    ``model.keras``) into ``detector`` layer by layer, where a layer's path and weight shapes
    match. Returns ``(copied, skipped)``: the layer paths copied, and ``{path: why}`` of
    ``detector``'s layers left at their initialization. A source that shares no layer is
    an error (another architecture or other widths)."""
    path = os.path.join(source, MODEL_FILE) if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init {source}: no model there (a .keras file or a folder holding {MODEL_FILE})")
    theirs = _weight_layers(keras.saving.load_model(path, safe_mode=True, compile=False))
    copied, skipped = [], {}
    for name, layer in _weight_layers(detector).items():
        other = theirs.get(name)
        if other is None:
            skipped[name] = "not in the source"
            continue
        mine, source_weights = layer.get_weights(), other.get_weights()
        shapes = [w.shape for w in mine], [w.shape for w in source_weights]
        if shapes[0] != shapes[1]:
            skipped[name] = f"shapes {shapes[0]} here, {shapes[1]} there"
            continue
        layer.set_weights(source_weights)
        copied.append(name)
    if not copied:
        example = next(iter(skipped.items()), ("", ""))
        raise ValueError(f"init {source}: no layer of {detector.config.name} matches the source's by name and shape "
                         f"(e.g. {example[0]}: {example[1]}); the same preset with the same widths is needed")
    return copied, skipped


def train(model, data, split="train", val_split="val", image_size=None, batch_size=None, epochs=None,
          minutes=None, out=None, resume=False, settings=(), strategy="default", mixed_precision=False,
          eval_every_epoch=False, seed=0, verbose=1, backbone_weights=FROM_CONFIG, *, val_data=None,
          callbacks=(), cache=False, diagnostics=True, overwrite=False, checkpoint_minutes=10.0, strict=False):
    """Trains preset ``model`` on dataset ``data`` and writes the training directory.

    Args:
      model: a preset of :func:`tfzoo.list_models`.
      data: a dataset spec (``shapes``, ``shapes:N``, ``voc:PATH``, ``coco:PATH``,
        ``yolo:PATH``, ``tfds:NAME``) or a list of specs with the same classes, concatenated (VOC 07+12).
      split / val_split: training and evaluation splits; ``val_split=None`` skips the
        evaluation; a val split the dataset lacks is skipped with a warning.
      image_size, batch_size, epochs: override the config (the learning rate follows the
        batch size, see :func:`resolve_config`).
      minutes: time budget; the schedule is fitted to it (see the module doc).
      out: the training directory. Default: a new folder per run, ``runs/<model>``, then
        ``runs/<model>-2`` ... (with ``resume``: the latest of them). A folder that holds
        a run or other files is refused unless ``resume`` or ``overwrite``.
      resume: continue the run in ``out`` from its last checkpoint; with ``epochs`` above
        the run's plan, a finished or stopped run trains on to that many epochs (its
        learning-rate schedule stretched to the new end).
      settings: ``["key=value", ...]`` config overrides. ``priors=auto`` fits a YOLOv2/v3
        model's priors to the training boxes (:mod:`tfzoo.train.priors`; without it, a
        YOLO run says when the data's own priors would fit its boxes better). Unless they set ``flip``, a recipe
        with flips trains without them where mirrored classes of the training data look
        alike (:func:`_check_flips`; the decision is in ``config.json``).
      strategy: one of :data:`STRATEGIES`.
      mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU.
      eval_every_epoch: also evaluate (and write metrics.json) after every epoch.
      seed: Keras' global seed and the input pipeline's.
      verbose: 1 shows progress on stderr (a bar per epoch on a terminal, one plain line per
        epoch otherwise) and progress lines; 0 is quiet.
      backbone_weights: overrides the config's initialization (``None``: random,
        ``"imagenet"``, a weights file); ImageNet weights that cannot be downloaded fall
        back to random with a warning.
      val_data: dataset spec(s) to evaluate on, if not ``data`` (VOC 07+12 evaluates on
        the 2007 test split).
      callbacks: extra ``keras.callbacks.Callback`` objects for ``fit``. One that stops
        training and has a ``stopped`` text (a :class:`TimeBudget` with a deadline of the
        caller's) gives its reason to ``TrainResult.stopped``.
      cache: ``True`` keeps the decoded, validated training examples in memory after the
        first epoch, so later epochs neither read, decode nor generate them (it costs
        height x width x 3 bytes per image: about 190 KiB for a shapes image, 0.5 MiB for
        a 500 x 375 VOC photo); augmentation still runs every epoch. ``False`` (default)
        reads the data every epoch.
      diagnostics: after training, also score the first :data:`TRAIN_SAMPLE_IMAGES` of
        ``split`` and name under- or overfitting, with per-class AP and the most confused
        class pairs on val (printed, and in metrics.json as ``diagnostics``); the losses
        (and per-epoch val AP) are drawn in ``training.png`` either way.
      overwrite: start a new run in an ``out`` that holds a run (replaced) or other files
        (left alone beside the run's own files).
      checkpoint_minutes: also checkpoint inside an epoch when this many minutes have
        passed since the last checkpoint (``None``: after every epoch only); a run resumed
        from such a checkpoint finishes that epoch's remaining steps first. On Ctrl-C the
        steps done are checkpointed and the command that resumes is printed.
      strict: stop at the first bad record of the data (:class:`~tfzoo.data.validate.DataError`,
        naming the file, the record and the problem): before any training for what the readers
        find when a split is opened (a folder's annotations and image headers), during it for
        an image that fails only when decoded. Default: train without the records the readers
        skip or repair, named in a warning per split (and once more after training for those
        found while reading).

    Returns:
      :class:`TrainResult`.
    """
    started = time.monotonic()
    specs = _specs(data)
    val_specs = _specs(val_data) if val_data is not None else specs
    preset_config(model)  # unknown model: error before any work
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}")
    if minutes is not None and strategy == "multiworker":
        raise ValueError("minutes is not supported with the multiworker strategy: workers would stop at "
                         "different steps; use epochs")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if checkpoint_minutes is not None and not checkpoint_minutes > 0:
        raise ValueError(f"checkpoint_minutes must be > 0, got {checkpoint_minutes}")
    for spec in specs + val_specs:
        tfzoo.data._parse(spec)  # a malformed spec: error before any TensorFlow work
    if out is None:
        out = latest_run_dir(model) if resume else new_run_dir(model)
    out = os.path.abspath(out)
    if not resume:
        check_new_run(out, overwrite)  # before any work: an earlier run is never lost by mistake
    dist = make_strategy(strategy)  # first: multiworker needs to start before other TF work
    scope = dist.scope() if dist is not None else contextlib.nullcontext()
    names = _class_names(specs)
    settings, auto_priors = _split_auto_priors(settings)

    if resume:
        if auto_priors:
            _info(verbose, "priors=auto: a resumed run keeps the priors it started with (config.json)")
        config, state = _resume_config(out, model, names, settings, image_size, batch_size, epochs, mixed_precision)
        policy = state.get("precision", FLOAT32)
    else:
        config = resolve_config(model, names, image_size=image_size, batch_size=batch_size, epochs=epochs,
                                settings=settings, backbone_weights=backbone_weights)
        if config.init:
            config = _init_config(config, _setting_keys(settings), verbose)
        policy = mixed_policy_name() if mixed_precision else FLOAT32
        state = None

    data_reports = []  # the readers' reports, for the problems found only while reading
    train_set = _load(specs, split, strict, warn=True, reports=data_reports)
    where = f"{'+'.join(specs)} [{split}]"
    # A proposal-based detector's proposals (selective search: cached, computed once); the
    # time budget is for training, so the clock starts again after them.
    train_set, proposal_seconds = with_proposals(train_set, config, where, verbose)
    proposal_sets = {}  # the val split with its proposals, reused by every evaluation
    if val_split is not None and all(split_exists(s, val_split) for s in val_specs):
        val_set, seconds = with_proposals(_load(val_specs, val_split, strict, warn=True, reports=data_reports), config,
                                          f"{'+'.join(val_specs)} [{val_split}]", verbose)
        proposal_seconds += seconds
        proposal_sets[(tuple(val_specs), val_split, None)] = val_set
    started += proposal_seconds
    if not resume:
        config = _check_flips(config, train_set, names, where, _setting_keys(settings))
        config = _check_priors(config, train_set, where, auto_priors, "priors" in _setting_keys(settings), verbose)
    count = count_examples(specs, split, train_set)
    if count == 0:
        raise validate.DataError(f"{where} has no examples")
    if count < config.batch_size:
        raise validate.DataError(f"{where} has {count} examples, fewer than batch_size {config.batch_size}; "
                                 "lower the batch size or add data")
    steps_per_epoch = count // config.batch_size
    if resume and state.get("steps_per_epoch") not in (None, steps_per_epoch):
        raise ValueError(f"{out}: the run was planned with {state['steps_per_epoch']} steps per epoch; {where} "
                         f"now gives {steps_per_epoch} ({count} examples / batch {config.batch_size})")

    val = None
    if val_split is not None:
        missing = [s for s in val_specs if not split_exists(s, val_split)]
        if missing:
            warnings.warn(f"{', '.join(missing)} has no split {val_split!r}: skipping evaluation")
        else:
            val_names = _class_names(val_specs)
            if val_names != names:
                raise ValueError(f"val data {'+'.join(val_specs)} has other classes than {where}")
            val = (val_specs, val_split, names)

    keras.utils.set_random_seed(seed)
    with precision(policy), scope:
        rundir = _RunDir(out, is_chief(dist) if dist is not None else True)
        try:
            if resume:
                extend = epochs is not None and epochs > int(state["planned_epochs"])
                if state.get("finished") and not extend:
                    return _finished(out, state, started)
                model_path = os.path.join(out, MODEL_FILE)
                if not os.path.exists(model_path):
                    raise ValueError(f"{out}: no {MODEL_FILE} to resume from (the run stopped before its first "
                                     "checkpoint); start it again without resume")
                detector = keras.saving.load_model(model_path, safe_mode=True)
                if optimizer_step(detector) != int(state.get("step", -1)):
                    warnings.warn(f"{model_path} holds step {optimizer_step(detector)}, state.json says "
                                  f"{state.get('step')}")
                schedule = None
                planned = int(state["planned_epochs"])
                initial_epoch = int(state["epoch"])
                rundir_state = dict(state, stopped=None)
                if extend:
                    _extend_schedule(detector, out, planned, epochs, steps_per_epoch, verbose)
                    planned = epochs
                    rundir_state.update(planned_epochs=planned, total_steps=planned * steps_per_epoch,
                                        finished=False)
                    config = config.replace(epochs=planned)
                    write_json_atomic(rundir.path(CONFIG_FILE), json.loads(config.to_json()))
                _info(verbose, f"resuming {out} at epoch {initial_epoch + 1}/{planned}, step "
                               f"{optimizer_step(detector)}")
            else:
                detector = _build(model, config)
                config = detector.config
                if config.init:
                    copied, skipped = init_weights(detector, config.init)
                    shown = "; ".join(f"{name} ({why})" for name, why in list(skipped.items())[:4])
                    _info(verbose, f"init from {config.init}: {len(copied)} layers' weights"
                                   + (f"; {len(skipped)} left at their initialization: {shown}"
                                      + ("; ..." if len(skipped) > 4 else "") if skipped else ""))
                planned = config.epochs
                schedule = make_schedule(config, planned * steps_per_epoch)
                detector.compile(optimizer=make_optimizer(config, schedule))
                # Optimizer slots now, not inside the first traced step (which tf.function
                # would then trace a second time to lift the new variables).
                detector.optimizer.build(detector.trainable_variables)
                initial_epoch = 0
                if rundir.chief:
                    _start_over(out)
                write_json_atomic(rundir.path(CONFIG_FILE), json.loads(config.to_json()))
                rundir_state = {
                    "model": model, "data": specs, "split": split, "epoch": 0, "step": 0, "finished": False,
                    "stopped": None, "planned_epochs": planned, "steps_per_epoch": steps_per_epoch,
                    "total_steps": planned * steps_per_epoch, "warmup_steps": schedule.warmup_steps,
                    "batch_size": config.batch_size, "precision": policy, "seed": seed,
                }
                _info(verbose, f"training {model} on {where}: {count} examples, {steps_per_epoch} steps/epoch x "
                               f"{planned} epochs{' (provisional, time budget)' if minutes else ''}, batch "
                               f"{config.batch_size}, {config.optimizer} lr {config.learning_rate:g} "
                               f"({config.lr_schedule}), {policy}, augment {_augment_text(config)}, out {out}")
            run = _Run(rundir, detector, rundir_state, val, verbose,
                       train_data=(specs, split, names) if diagnostics else None, proposal_sets=proposal_sets)
            run.write_state()
            result = _fit(run, train_set, config, schedule, steps_per_epoch, planned, initial_epoch, minutes,
                          eval_every_epoch, seed, verbose, dist, callbacks, started, epochs, cache, checkpoint_minutes)
            for message in late_problems(data_reports):  # found while reading (an image failing to decode)
                warnings.warn(message)
            return result
        finally:
            rundir.cleanup()


def with_proposals(dataset, config, where, verbose, subset=False):
    """``(dataset with proposals, seconds spent)`` for a proposal-based detector's config
    (:func:`tfzoo.proposals.for_config`); other configs' datasets as they are."""
    if getattr(config, "proposals", None) is None:
        return dataset, 0.0
    from tfzoo import proposals as proposal_source  # noqa: PLC0415

    dataset, seconds = proposal_source.for_config(dataset, config, progress=bool(verbose),
                                                  desc=f"proposals {where}", subset=subset)
    if seconds >= 1.0:
        _info(verbose, f"proposals of {where}: {config.proposals}, {seconds:.1f} s (not counted in the time budget)")
    return dataset, seconds


def _run_stages(run, train_set, config, verbose, deadline=None):
    """The detector's stages after ``fit`` (:attr:`Detector.stages`), in order, each
    checkpointed when it ends and recorded in ``state.json`` (``stages``: name -> its
    figures), so that a resumed run skips the ones done. ``deadline`` (``time.monotonic()``,
    the end of ``--minutes``) is passed on: a stage shortens its work to end near it."""
    detector = run.detector
    names = [name for name in type(detector).stages if name != "fit"]
    done = run.state.setdefault("stages", {})
    for number, name in enumerate(names, start=1):
        if name in done:
            continue
        method = getattr(detector, f"train_stage_{name}", None)
        if method is None:
            raise TypeError(f"{type(detector).__name__} lists stage {name!r} but has no train_stage_{name} method")
        _info(verbose, f"stage {number}/{len(names)} after fit: {name} ...")
        started = time.monotonic()
        figures = dict(method(train_set, config, deadline=deadline, progress=bool(verbose)) or {})
        seconds = round(time.monotonic() - started, 1)
        done[name] = {**figures, "seconds": seconds}
        run.metrics_step = None  # the weights changed without an optimizer step: evaluate again
        run.checkpoint(int(run.state["epoch"]))
        _log_stage(run, name, figures)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        _info(verbose, f"stage {number}/{len(names)} {name}: {shown or 'done'} ({seconds:.1f} s)")


def _log_stage(run, name, figures):
    """A stage's figures as TensorBoard scalars (``logs/stages``: ``<stage>/<figure>`` at the
    run's step), beside fit's losses; nothing without the tensorboard package."""
    if not run.dir.chief or importlib.util.find_spec("tensorboard") is None:
        return
    writer = tf.summary.create_file_writer(os.path.join(run.dir.path(LOGS_DIR), "stages"))
    with writer.as_default():
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(f"{name}/{key}", float(value), step=int(run.state.get("step", 0)))
    writer.close()


def _save_on_interrupt(run, checkpoint, nan_guard, steps_per_epoch):
    """On Ctrl-C inside ``fit``: a checkpoint of the steps done (unless the loss went
    non-finite), the reason in state.json, and how to resume, on stderr."""
    if not run.dir.chief:
        return
    if nan_guard.stopped is None and optimizer_step(run.detector) > int(run.state.get("step", 0)):
        checkpoint.save()
    step = int(run.state.get("step", 0))
    run.write_state(stopped=f"interrupted at step {step}", finished=False)
    epoch, done = divmod(step, steps_per_epoch)
    where = f"epoch {epoch + 1}, step {done} of {steps_per_epoch}" if done else f"after epoch {epoch}"
    data = " ".join(f"--data {spec}" for spec in run.state.get("data", [])[:1])
    print(f"tfzoo: interrupted: {run.dir.out}/{MODEL_FILE} holds step {step} ({where}); resume with: tfzoo train "
          f"{run.state.get('model')} {data} --out {run.dir.out} --resume", file=sys.stderr, flush=True)


def _extend_schedule(detector, out, planned, epochs, steps_per_epoch, verbose):
    """Moves the end of a resumed run's learning-rate schedule from ``planned`` to
    ``epochs`` epochs (the step and cosine decays move with it)."""
    schedule = getattr(detector.optimizer, "_learning_rate", None)
    if not isinstance(schedule, WarmupDecaySchedule):
        raise ValueError(f"cannot extend {out}: its optimizer has no tfzoo learning-rate schedule")
    schedule.set_total_steps(epochs * steps_per_epoch)
    _info(verbose, f"extending {out} from {planned} to {epochs} epochs: the learning-rate schedule now ends at "
                   f"step {epochs * steps_per_epoch}")


def _resume_config(out, model, names, settings, image_size, batch_size, epochs, mixed_precision):
    state_path, config_path = os.path.join(out, STATE_FILE), os.path.join(out, CONFIG_FILE)
    for path in (state_path, config_path):
        if not os.path.exists(path):
            raise ValueError(f"cannot resume: {path} does not exist")
    state = _read_json(state_path)
    saved = preset_config(model).from_dict(_read_json(config_path)) if state.get("model") == model else None
    if saved is None:
        raise ValueError(f"cannot resume {out} with model {model!r}: it was trained with {state.get('model')!r}")
    requested = resolve_config(model, names, image_size=image_size, batch_size=batch_size, epochs=epochs,
                               settings=settings)
    fields = sorted(_requested_fields(settings, image_size, batch_size, epochs))
    if epochs is not None and epochs < int(state.get("planned_epochs", 0)):
        raise ValueError(f"cannot resume {out} with --epochs {epochs}: it is planned for {state.get('planned_epochs')} "
                         f"epochs; --epochs can only extend a run")
    fields = [f for f in fields if f != "epochs"]
    diffs = [f"{f}={getattr(requested, f)!r} (saved: {getattr(saved, f)!r})" for f in fields
             if getattr(requested, f) != getattr(saved, f)]
    if diffs:
        raise ValueError(f"cannot resume {out} with another config: {'; '.join(diffs)}; drop these options or "
                         "train into another out")
    if mixed_precision and state.get("precision", FLOAT32) == FLOAT32:
        raise ValueError(f"cannot resume {out} with mixed precision: it was trained in float32")
    return saved, state


def _finished(out, state, started):
    model_path = os.path.join(out, MODEL_FILE)
    warnings.warn(f"{out}: the run already finished ({state.get('epoch')} epochs, step {state.get('step')}); "
                  f"nothing to resume (--resume --epochs N, N > {state.get('epoch')}, trains it further)")
    detector = keras.saving.load_model(model_path, safe_mode=True)
    metrics_path = os.path.join(out, METRICS_FILE)
    metrics = _read_json(metrics_path) if os.path.exists(metrics_path) else None
    return TrainResult(out, detector, metrics, int(state.get("epoch", 0)), int(state.get("step", 0)),
                       state.get("stopped"), time.monotonic() - started, True,
                       int(state.get("planned_epochs", 0)), int(state.get("steps_per_epoch", 0)))


def _tensorboard(log_dir):
    """``[keras.callbacks.TensorBoard(log_dir)]``, or ``[]`` with a warning when the
    ``tensorboard`` package (which TensorFlow >= 2.20 no longer installs) is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn(f"TensorBoard is not installed, so {log_dir} stays empty; pip install tensorboard")
        return []
    return [keras.callbacks.TensorBoard(log_dir)]


def _fit(run, train_set, config, schedule, steps_per_epoch, planned, initial_epoch, minutes, eval_every_epoch,
         seed, verbose, dist, extra_callbacks, started, max_epochs, cache=False, checkpoint_minutes=None):
    detector = run.detector
    stage_deadline = None
    staged = len(type(detector).stages) > 1
    if staged:
        # The stages after fit run inside the same budget (--minutes, or a caller's
        # TimeBudget such as the demo's): fit gets the rest of it.
        share = float(getattr(type(detector), "stage_share", 0.0))
        now = time.monotonic()
        if minutes is not None:
            stage_deadline = now + 60.0 * minutes
            minutes = minutes * (1.0 - share)
        for callback in extra_callbacks:
            if isinstance(callback, TimeBudget) and callback.deadline > now:
                stage_deadline = min(stage_deadline or callback.deadline, callback.deadline)
                callback.deadline = now + (callback.deadline - now) * (1.0 - share)
        if initial_epoch < planned and run.state.get("stages"):
            # fit trains further: the stages' weights no longer fit its features; they serve
            # nothing (the softmax and fit's boxes do) until the stages run again.
            detector.reset_stages()
            run.state["stages"] = {}
            run.write_state()
    # A resumed run draws a new data order rather than repeating its first epochs'.
    batches = tfzoo.data.pipeline(train_set, detector, config.batch_size, training=True,
                                  seed=seed + initial_epoch, cache=cache).repeat()
    if dist is not None and isinstance(dist, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        batches = batches.with_options(options)
    nan_guard = StopOnNonFiniteLoss()
    checkpoint = _Checkpoint(run, nan_guard, steps_per_epoch, eval_every_epoch, checkpoint_minutes)
    callbacks = [nan_guard]
    budget = replan = None
    if minutes is not None:
        budget = TimeBudget(time.monotonic() + 60.0 * minutes, minutes)
        callbacks.append(budget)
    callbacks.append(checkpoint)
    progress = TrainingProgress(config.batch_size) if verbose else None
    if progress is not None:
        callbacks.append(progress)  # after the checkpoint: its line holds val AP
    if minutes is not None and schedule is not None and initial_epoch == 0:
        replan = _Replan(run, schedule, steps_per_epoch, budget.deadline, max_epochs, verbose)
        callbacks.append(replan)  # after the checkpoint: an epoch's length includes it
    callbacks += [*_tensorboard(run.dir.path(LOGS_DIR)), *extra_callbacks]
    history = {}

    def fit(first, last, steps=steps_per_epoch):
        try:
            result = detector.fit(batches, epochs=last, initial_epoch=first, steps_per_epoch=steps,
                                  callbacks=callbacks, verbose=0, shuffle=False)  # the pipeline shuffles
        except KeyboardInterrupt:
            _save_on_interrupt(run, checkpoint, nan_guard, steps_per_epoch)
            raise
        except ValueError as error:
            if _workers(dist) > 1 and ("PerReplica" in str(error) or "reduction dimension" in str(error)):
                raise RuntimeError(
                    f"Keras {keras.__version__} model.fit fails under MultiWorkerMirroredStrategy with more than one "
                    "worker (keras-team/keras#20585); train on one machine with strategy 'mirrored'"
                ) from error
            raise
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)

    fit_started = time.monotonic()
    run.start_clock()
    if minutes is not None and schedule is not None and initial_epoch == 0 and planned > 1:
        # Time budget: one epoch on the provisional schedule, then fit the schedule to the budget.
        if progress is not None:  # the lines count to the plan ("?" before it is made)
            progress.planned = lambda: replan.planned
        fit(0, 1)
        if budget.stopped is None and nan_guard.stopped is None and not detector.stop_training:
            overhead = time.monotonic() - (checkpoint.epoch_times[-1][1] or fit_started)
            epoch_s = _epoch_seconds(checkpoint.epoch_times[-1], steps_per_epoch, overhead)
            first_s = time.monotonic() - fit_started
            planned = plan_epochs(60.0 * minutes, first_s, epoch_s or first_s, max_epochs)
            # A schedule ends after its warm-up: a budget that holds fewer steps is cut by its
            # deadline instead (as the re-planner does).
            planned = max(planned, warmup_epochs(schedule, steps_per_epoch))
            schedule.set_total_steps(planned * steps_per_epoch)
            run.write_state(planned_epochs=planned, total_steps=planned * steps_per_epoch)
            _info(verbose, f"time budget {minutes:g} min: {planned} epochs planned (first epoch {first_s:.1f} s, "
                           f"then about {epoch_s or first_s:.1f} s each; re-planned after each epoch)")
            replan.planned = planned
            # The re-planner may lengthen the plan while a fit runs: then fit again up to it.
            while int(run.state["epoch"]) < replan.planned:
                fit(int(run.state["epoch"]), replan.planned)
                if budget.stopped or nan_guard.stopped or (
                        detector.stop_training and int(run.state["epoch"]) < replan.planned):
                    break  # the deadline, a non-finite loss or another callback ended it
    elif initial_epoch < planned:
        offset = optimizer_step(detector) - initial_epoch * steps_per_epoch
        if 0 < offset < steps_per_epoch:  # a checkpoint taken inside an epoch: finish that epoch first
            _info(verbose, f"resuming inside epoch {initial_epoch + 1}: {offset} of its {steps_per_epoch} steps are "
                           "done")
            checkpoint.offset = offset
            fit(initial_epoch, initial_epoch + 1, steps=steps_per_epoch - offset)
            initial_epoch = int(run.state["epoch"])
        if initial_epoch < planned and not (nan_guard.stopped or (budget and budget.stopped)
                                            or detector.stop_training):
            fit(initial_epoch, planned)

    if nan_guard.stopped is not None:
        message = f"training stopped: {nan_guard.stopped}"
        model_path = run.dir.path(MODEL_FILE)
        if os.path.exists(model_path):
            message += f"; {model_path} keeps epoch {run.state['epoch']} (step {run.state['step']})"
            detector = keras.saving.load_model(model_path, safe_mode=True)
        else:
            message += "; no checkpoint was written (the weights are not finite)"
        warnings.warn(message)
        run.write_state(stopped=nan_guard.stopped, finished=False)
        run.plot()
        return TrainResult(run.dir.out, detector, None, int(run.state["epoch"]), int(run.state["step"]),
                           nan_guard.stopped, time.monotonic() - started, False, int(run.state["planned_epochs"]),
                           steps_per_epoch, history)

    completed = int(run.state["epoch"])
    finished = completed >= int(run.state["planned_epochs"])
    stopped = None
    if not finished:
        # The reason of the callback that stopped it: the time budget, or an extra
        # callback with a ``stopped`` text (a caller's own TimeBudget ...).
        reasons = [getattr(c, "stopped", None) for c in [budget, *extra_callbacks] if c is not None]
        stopped = next((r for r in reasons if isinstance(r, str) and r),
                       f"stopped by a callback after epoch {completed}")
        _info(verbose, f"training stopped: {stopped}; resume to finish the schedule")
    if optimizer_step(detector) != int(run.state["step"]):
        run.checkpoint(completed)
    spent = any(isinstance(c, TimeBudget) and c.stopped for c in [budget, *extra_callbacks] if c is not None)
    if finished or (staged and spent and nan_guard.stopped is None):  # a spent budget still gets its stages
        _run_stages(run, train_set, config, verbose, stage_deadline)
    metrics = run.evaluate()
    run.write_state(finished=finished, stopped=stopped,
                    seconds=run.training_seconds())
    if metrics is not None:
        _info(verbose, f"{run.val[1]} AP {metrics.get('AP', 0.0):.4f}, AP50 {metrics.get('AP50', 0.0):.4f}, "
                       f"VOC07 mAP {metrics.get('voc07_mAP', 0.0):.4f} -> {run.dir.path(METRICS_FILE)}")
    if run.train_data is not None and int(run.state["step"]) > 0:
        for line in run.diagnose(*run.train_data):
            _info(verbose, line)
        metrics = run.metrics
    plot = run.plot()
    if plot:
        _info(verbose, f"losses{' and val AP' if 'val_AP' in run.state.get('history', {}) else ''} by epoch -> {plot}")
    return TrainResult(run.dir.out, detector, metrics, completed, int(run.state["step"]), stopped,
                       time.monotonic() - started, finished, int(run.state["planned_epochs"]), steps_per_epoch,
                       history, run.diagnostics)
