"""The configuration as one typed object: every key of config.yml with its type, default, bounds and help, once.

``Config`` is a frozen dataclass that pydantic validates: each field's annotation is the key's type (pydantic's
Strict types: ``"64"`` is not an integer, ``true`` not a number; a ``Literal`` lists the choices) and its
``key(...)`` the default, help, kind and bounds, as pydantic's Field arguments. pydantic checks a mapping against it
(``utils.config.validation``), unknown keys included (``extra="forbid"``); building one in code checks nothing. ``config_template.yml`` and the docs' key table are generated from it
(``utils.config.template``). Values keep their YAML types (lists, mappings), so a Config writes back to the same YAML.
"""

from __future__ import annotations

import copy
import functools
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, with_config
from pydantic.fields import FieldInfo

MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit numbers (numpy's limit)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed", "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

# Upper bounds of the values that size memory or processes, whoever wrote the file (docs/security.md, Limits).
MAX_IMAGE_SIDE = 2048
MAX_BATCH_SIZE = 4096
MAX_OUTPUT_CHANNELS = 16384
MAX_WORKERS = 64
MAX_PREFETCH = 16
MAX_EPOCHS = 10_000
MAX_DEVICES = 64
MAX_CPU_THREADS = 1024
IMAGE_SIDE_LIMIT = ("one 3x2048x2048 float32 image is 48 MiB before the network and its activations are tens of "
                    "times that; the thesis trains at 227, ImageNet models at 224 to 600")
BATCH_LIMIT = ("the input alone is batch x 3 x height x width x 4 bytes, 2.4 GiB for 4096 images of 227x227; "
               "the training split has 8,144 images")
OUTPUT_CHANNELS_LIMIT = ("the head's weights grow with it, for ghost 960 x output_channels plus num_classes x "
                         "output_channels: 76 MB at 16384, 384 GB at 10^8; the widest common heads are 1280 to 4096")
WORKERS_LIMIT = "each loader process is a Python process holding its own prefetched batches"
PREFETCH_LIMIT = "num_workers x prefetch_factor batches wait in memory at once"
EPOCHS_LIMIT = ("the pre-run check steps the schedule through every epoch and the records keep a row per epoch; "
                "the thesis trains 200")
DEVICES_LIMIT = "one training process per device"
CPU_THREADS_LIMIT = "each thread has its own stack and OpenMP state; more threads than cores only wait for them"

# What a key is about: what is trained (sent to trackers; runs equal in these differ only by seed), a label of
# the run (sent to trackers: seed, tags, description), or the setup of the machine and its files (not sent).
TRAINED, LABEL, SETUP = "trained", "label", "setup"
SCHEMA_RULES = ConfigDict(extra="forbid")  # an unknown key is a problem; strictness comes from the Strict types

ImageSide = Annotated[StrictInt, Field(ge=1, le=MAX_IMAGE_SIDE)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]
Positive = Annotated[StrictFloat, Field(gt=0)]
DeviceCount = Annotated[StrictInt, Field(ge=-1, le=MAX_DEVICES)]
TransformSpec = dict[StrictStr, dict[StrictStr, Any] | None]


@with_config(SCHEMA_RULES)
@dataclass(frozen=True)
class KeyInfo:
    """A key's help text, kind, docs section, YAML anchor in the template, and why it has an upper bound."""

    help: str
    kind: str = SETUP
    section: str | None = None
    anchor: str | None = None
    limit: str | None = None

    @property
    def tracked(self) -> bool:
        return self.kind != SETUP


def key(default: Any, help: str, kind: str = SETUP, *, section: str | None = None, anchor: str | None = None,
        limit: str | None = None, length: int | None = None, **bounds: float) -> Any:
    """A config key as a dataclass field whose metadata pydantic reads as Field arguments: help (description),
    kind, section, anchor and limit (json_schema_extra), a list's length, and the bounds of a number (ge, gt, le,
    lt); a list's items carry theirs in the annotation (ImageSide, ...)."""
    info = {"kind": kind, "section": section, "anchor": anchor, "limit": limit}
    sizes = {"min_length": length, "max_length": length} if length is not None else {}
    metadata = {"description": help, "json_schema_extra": {name: value for name, value in info.items() if value},
                **sizes, **bounds}
    if isinstance(default, (dict, list)) or is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@functools.cache
def key_fields(cls: type) -> dict[str, FieldInfo]:
    """The fields of a config dataclass (Config or a nested group), in order, as pydantic reads them."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {item.name: FieldInfo.from_annotated_attribute(hints[item.name], item) for item in fields(cls)}


def key_info(item: FieldInfo) -> KeyInfo:
    """The KeyInfo of a field made by key()."""
    return KeyInfo(item.description or "", **(item.json_schema_extra or {}))


@with_config(SCHEMA_RULES)
@dataclass(frozen=True)
class RGBNormalization:
    """Normalisation of RGB images: per-channel mean and standard deviation of pixel values scaled to 0..1."""

    mean: list[Fraction] = key([0.4707, 0.4602, 0.4550], "per-channel means (RGB, of pixel values scaled to 0..1)",
                               TRAINED, length=3)
    std: list[Positive] = key([0.2594, 0.2585, 0.2635], "per-channel standard deviations (RGB)", TRAINED, length=3)


@with_config(SCHEMA_RULES)
@dataclass(frozen=True)
class GrayscaleNormalization:
    """Normalisation of grayscale images: mean and standard deviation of pixel values scaled to 0..1."""

    mean: list[Fraction] = key([0.4627], "per-channel means (grayscale, of pixel values scaled to 0..1)", TRAINED,
                               length=1)
    std: list[Positive] = key([0.2545], "per-channel standard deviations (grayscale)", TRAINED, length=1)


THESIS_IMAGE_AUGMENTATIONS = {
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
}


@with_config(SCHEMA_RULES)
@dataclass(frozen=True)
class Config:
    """Every setting of a run, as config.yml names it; the defaults are the thesis's best run, C-50."""

    loglevel: Literal[LOG_LEVELS] = key("INFO", "console and log-file level", section="Logging and tracking")
    logging_dir: StrictStr = key("logs", "folder of the daily log files (YYYYMMDD.log)")
    log_to_neptune: StrictBool = key(False, "send the run to Neptune (needs the three neptune_* keys below)")
    neptune_username: StrictStr | None = key("<neptune.ai username>", "Neptune workspace (user name)")
    neptune_project_name: StrictStr | None = key("<neptune.ai project name>", "Neptune project name")
    neptune_api_token: StrictStr | None = key(
        None, "Neptune API token; prefer the NEPTUNE_API_TOKEN environment variable (never written to records)")
    neptune_mode: Literal["async", "offline", "debug"] = key(
        "async", "Neptune connection mode: async (live), offline (sync later), debug")
    log_to_tensorboard: StrictBool = key(True, "write TensorBoard events under the run folder")
    log_to_mlflow: StrictBool = key(True, "log the run to MLflow, the runs dashboard (make dashboard)")
    mlflow_tracking_uri: StrictStr | None = key(
        None, "MLflow tracking URI: null: the SQLite file <output_path>/mlflow.db; sqlite:///path/mlflow.db; "
              "http://host:5000 (a shared mlflow server)")
    mlflow_experiment: StrictStr = key("cars", "MLflow experiment of the runs")
    mlflow_log_checkpoints: StrictBool = key(False, "also store best.ckpt and last.ckpt as MLflow artifacts")
    tags: list[StrictStr] = key([], "tags of the run (MLflow and Neptune tags, summary.json)", LABEL)
    description: StrictStr | None = key("", "free-text description of the run (MLflow's run note)", LABEL)

    stanford_raw_data_path: StrictStr = key(
        "input/raw", "folder of the raw Stanford Cars files (car_ims.tgz, cars_annos.mat, car_devkit.tgz)",
        section="Locations")
    stanford_data_path: StrictStr = key("input/stanford", "prepared data folder (train.py -d overrides it)")
    output_path: StrictStr = key("output", "folder of the run folders (checkpoints, records, TensorBoard)")

    image_size: list[ImageSide] = key([227, 227], "network input size [height, width]", TRAINED, length=2,
                                      section="Preprocessing", anchor="img_size", limit=IMAGE_SIDE_LIMIT)
    convert_to_grayscale: StrictBool = key(False, "convert images to one grayscale channel", TRAINED)
    normalize: StrictBool = key(True, "normalise tensors with the parameters of the colour mode", TRAINED)
    normalization_params_rgb: RGBNormalization = key(
        RGBNormalization(), "used when convert_to_grayscale is false", TRAINED)
    normalization_params_grayscale: GrayscaleNormalization = key(
        GrayscaleNormalization(), "used when convert_to_grayscale is true", TRAINED)
    crop_to_bboxes: StrictBool = key(False, "crop training images to their bounding boxes", TRAINED,
                                     section="Augmentation")
    erase_background: StrictBool = key(
        False, "erase the background outside the box instead of cropping, keeping ratios (with crop_to_bboxes)",
        TRAINED)
    augment_images: StrictBool = key(True, "apply image_augmentations to training images", TRAINED)
    image_augmentations: TransformSpec | None = key(
        THESIS_IMAGE_AUGMENTATIONS,
        "torchvision.transforms on PIL images, applied in order: {ClassName: {kwarg: value}}", TRAINED)
    augment_tensors: StrictBool = key(False, "apply tensor_augmentations to training tensors", TRAINED)
    tensor_augmentations: TransformSpec | None = key(
        None, "torchvision.transforms on tensors, applied in order: {ClassName: {kwarg: value}}, "
              "e.g. {RandomErasing: {p: 0.5, scale: [0.02, 0.25]}}", TRAINED)

    architecture: StrictStr = key("ghost", "network name from models.arch_dict, or timm:<name> for a timm model "
                                           "(e.g. timm:ghostnet_100)", TRAINED, section="Network and training")
    pretrained_weights: StrictStr | None = key(
        None, "imagenet (the ImageNet weights of a timm:<name> or torchvision architecture), a torchvision weights "
              "name (e.g. IMAGENET1K_V1) or a weights file; the classifier is replaced. null trains from scratch",
        TRAINED)
    batch_size: StrictInt = key(64, "images per batch (per device)", TRAINED, ge=1, le=MAX_BATCH_SIZE,
                                limit=BATCH_LIMIT)
    num_epochs: StrictInt = key(200, "maximum number of epochs", TRAINED, ge=1, le=MAX_EPOCHS, limit=EPOCHS_LIMIT)
    early_stopping_patience: StrictInt | None = key(
        None, "epochs without valid_loss improvement before stopping; null: 15, or 3x ReduceLROnPlateau patience",
        TRAINED, ge=0, le=MAX_EPOCHS, limit=EPOCHS_LIMIT)
    dropout: StrictFloat = key(0.2, "dropout rate before the last Linear layer", TRAINED, ge=0, lt=1)
    output_channels: StrictInt | None = key(
        320, "width of the layer before the classifier: ghost's last layer, a timm:<name> model's 1x1 head "
             "convolution (a fresh one when it differs from the model's); null: the architecture's own (ghost: "
             "1280)", TRAINED, ge=1, le=MAX_OUTPUT_CHANNELS, limit=OUTPUT_CHANNELS_LIMIT)
    optimizer: StrictStr = key("AdamW", "a torch.optim class name", TRAINED)
    optimizer_params: dict[StrictStr, Any] | None = key({"lr": 0.001, "weight_decay": 0.6},
                                                        "keyword arguments of the optimizer", TRAINED)
    lr_scheduler: StrictStr | None = key("MultiStepLR",
                                         "a torch.optim.lr_scheduler class name, or null for a constant learning rate",
                                         TRAINED)
    lr_scheduler_params: dict[StrictStr, Any] | None = key(
        {"gamma": 0.1, "milestones": [67, 82, 95, 107]},
        "keyword arguments of the scheduler (epochs); LambdaLR/MultiplicativeLR: lr_lambda: '0.975 ** epoch'",
        TRAINED)
    loss_function: StrictStr = key("LabelSmoothingCrossEntropy",
                                   "LabelSmoothingCrossEntropy or a torch.nn loss class name", TRAINED)
    loss_params: dict[StrictStr, Any] | None = key(None, "keyword arguments of the loss (e.g. epsilon: 0.1)", TRAINED)

    warmup_epochs: StrictInt = key(
        0, "epochs of linear learning-rate warmup from warmup_start_factor x lr, then lr_scheduler (its epochs "
           "count from the end of the warmup); 0: off", TRAINED, ge=0, le=MAX_EPOCHS, limit=EPOCHS_LIMIT,
        section="Training options (docs/recipes.md)")
    warmup_start_factor: StrictFloat = key(0.1, "learning rate of the first warmup epoch, as a fraction of lr",
                                           TRAINED, gt=0, le=1)
    ema_decay: StrictFloat = key(
        0.0, "exponential moving average of the weights (decay per optimizer step, warmed up from 0.1): validation, "
             "checkpoints and the final model use the average; 0: off", TRAINED, ge=0, lt=1)
    mixup_alpha: StrictFloat = key(0.0, "MixUp of training batches with a Beta(alpha, alpha) share; 0: off",
                                   TRAINED, ge=0)
    cutmix_alpha: StrictFloat = key(
        0.0, "CutMix of training batches (with mixup_alpha: one of the two per batch); 0: off", TRAINED, ge=0)
    gradient_clip_val: StrictFloat | None = key(None, "clip the gradients' total norm to this value; null or 0: off",
                                                TRAINED, ge=0)
    accumulate_grad_batches: StrictInt = key(1, "batches whose gradients are summed before each optimizer step",
                                             TRAINED, ge=1)
    backbone_lr_scale: StrictFloat = key(
        1.0, "learning rate of every layer but the classifier (and a fresh head) as a fraction of the head's; 1: "
             "one learning rate", TRAINED, gt=0)
    freeze_backbone_epochs: StrictInt = key(
        0, "epochs during which only the classifier (and a fresh head) train; 0: off", TRAINED, ge=0, le=MAX_EPOCHS,
        limit=EPOCHS_LIMIT)

    seed: StrictInt | None = key(42, "seed of every random generator (workers too); null draws one", LABEL, ge=0,
                                 le=MAX_SEED, section="Reproducibility and hardware")
    num_workers: StrictInt | None = key(None, "data loader processes; null: the machine's cores, at most 8", ge=0,
                                        le=MAX_WORKERS, limit=WORKERS_LIMIT)
    cpu_threads: StrictInt | None = key(
        None, "threads torch computes with on the CPU; null: the usable CPUs (affinity, cgroup quota) less one per two "
              "loader processes; OMP_NUM_THREADS wins when set", ge=1, le=MAX_CPU_THREADS, limit=CPU_THREADS_LIMIT)
    pin_memory: StrictBool | None = key(None, "page-locked loader memory for faster copies to the GPU; null: when "
                                              "CUDA is available")
    persistent_workers: StrictBool = key(True, "keep the loader processes alive from one epoch to the next")
    prefetch_factor: StrictInt | None = key(
        None, "batches each loader process prepares ahead; null: torch's default (2)", ge=1, le=MAX_PREFETCH,
        limit=PREFETCH_LIMIT)
    cache_images: StrictBool = key(False, "preprocess (crop, erase, resize, grayscale) once into uint8 cache files: "
                                          "same pixels, no JPEG decoding later")
    cache_path: StrictStr | None = key(None, "folder of the image cache files; null: <stanford_data_path>/.cache")
    augmentation_device: Literal["cpu", "gpu"] = key(
        "cpu", "cpu: augment each image in the loader (torchvision); gpu: whole batches on the training device "
               "(kornia)", TRAINED)
    data_on_device: StrictBool = key(
        False, "keep the cached uint8 images of both splits in the training device's memory and draw, augment and "
               "normalise batches there, with no loader processes (needs cache_images and augmentation_device: gpu)",
        TRAINED)
    validation_batch_size: StrictInt | None = key(
        None, "images per validation batch (per device); null: batch_size. Larger is faster on GPUs, same results",
        ge=1, le=MAX_BATCH_SIZE, limit=BATCH_LIMIT)
    precision: Literal[PRECISIONS] = key(32, "Trainer precision: 32, 16-mixed, bf16-mixed, ...", TRAINED)
    channels_last: StrictBool = key(False, "channels-last memory layout of network and inputs (faster with mixed "
                                           "precision on GPUs)", TRAINED)
    compile_model: StrictBool = key(False, "torch.compile the network (compiles during the first steps)", TRAINED)
    compile_mode: Literal[COMPILE_MODES] = key(
        "default", "torch.compile mode with compile_model: default, reduce-overhead (CUDA graphs: far fewer kernel "
                   "launches), max-autotune, max-autotune-no-cudagraphs", TRAINED)
    cudnn_benchmark: StrictBool = key(
        False, "on CUDA: cuDNN times its convolution algorithms on the first batches of each shape and keeps the "
               "fastest (results differ in the last bits; runs are no longer bit-reproducible)", TRAINED)
    profiler: Literal["simple", "advanced", "pytorch"] | None = key(
        None, "Lightning profiler of the run: null (none), simple (time of each hook), advanced (cProfile of each "
              "hook) or pytorch (torch.profiler: operator tables and a trace of 20 training steps after the first 15); "
              "reports in <run folder>/profile/")
    accelerator: Literal[ACCELERATORS] = key("auto", "auto (CUDA when available, else CPU), gpu, cpu, mps, ...")
    devices: DeviceCount | StrictStr | list[StrictInt] = key(
        1, "devices per node: a count (-1: all), 'auto' or a list of indices", TRAINED, limit=DEVICES_LIMIT)
    strategy: StrictStr = key("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...", TRAINED)
    num_nodes: StrictInt = key(1, "machines taking part (DDP)", TRAINED, ge=1)

    def normalization(self) -> RGBNormalization | GrayscaleNormalization:
        """The normalisation parameters of the configured colour mode."""
        return self.normalization_params_grayscale if self.convert_to_grayscale else self.normalization_params_rgb


def config_keys() -> list[str]:
    """The top-level keys, in the order config.yml lists them."""
    return list(key_fields(Config))


def keys_of_kind(*kinds: str) -> tuple[str, ...]:
    """The top-level keys of the given kinds (TRAINED, LABEL, SETUP), in order."""
    return tuple(name for name, field in key_fields(Config).items() if key_info(field).kind in kinds)
