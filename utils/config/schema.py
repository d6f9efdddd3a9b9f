"""The configuration as one typed object: every key of config.yml with its type, default, bounds and help, once.

``Config`` is a frozen dataclass; each field's annotation is the key's type and its ``key(...)`` the rest.
``config_template.yml`` and the docs' key table are generated from it (``utils.config.template``).
Values keep their YAML types (lists, mappings), so a Config writes back to the same YAML.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit numbers (numpy's limit)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed", "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

# What a key is about: what is trained (sent to trackers; runs equal in these differ only by seed), a label of
# the run (sent to trackers: seed, tags, description), or the setup of the machine and its files (not sent).
TRAINED, LABEL, SETUP = "trained", "label", "setup"


@dataclass(frozen=True)
class KeyInfo:
    """A key's help text, kind and bounds: ``at_least``/``at_most`` inclusive, ``above``/``below`` exclusive
    (of a number, or of each number of a list); ``length`` of a list; ``choices`` of the values."""

    help: str
    kind: str = SETUP
    choices: tuple[Any, ...] | None = None
    length: int | None = None
    at_least: float | None = None
    at_most: float | None = None
    above: float | None = None
    below: float | None = None
    section: str | None = None
    anchor: str | None = None

    @property
    def tracked(self) -> bool:
        return self.kind != SETUP


def key(default: Any, help: str, kind: str = SETUP, **info: Any) -> Any:
    """A config key as a dataclass field: its default and its KeyInfo (help, kind, bounds, choices)."""
    metadata = {"key": KeyInfo(help, kind, **info)}
    if isinstance(default, (dict, list)) or is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def key_info(item: Any) -> KeyInfo:
    """The KeyInfo of a dataclass field made by key()."""
    return item.metadata["key"]


@dataclass(frozen=True)
class RGBNormalization:
    """Normalisation of RGB images: per-channel mean and standard deviation of pixel values scaled to 0..1."""

    mean: list[float] = key([0.4707, 0.4602, 0.4550], "per-channel means (RGB, of pixel values scaled to 0..1)",
                            TRAINED, length=3, at_least=0, at_most=1)
    std: list[float] = key([0.2594, 0.2585, 0.2635], "per-channel standard deviations (RGB)", TRAINED, length=3,
                           above=0)


@dataclass(frozen=True)
class GrayscaleNormalization:
    """Normalisation of grayscale images: mean and standard deviation of pixel values scaled to 0..1."""

    mean: list[float] = key([0.4627], "per-channel means (grayscale, of pixel values scaled to 0..1)", TRAINED,
                            length=1, at_least=0, at_most=1)
    std: list[float] = key([0.2545], "per-channel standard deviations (grayscale)", TRAINED, length=1, above=0)


THESIS_IMAGE_AUGMENTATIONS = {
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
}
TransformSpec = dict[str, dict[str, Any] | None]


@dataclass(frozen=True)
class Config:
    """Every setting of a run, as config.yml names it; the defaults are the thesis's best run, C-50."""

    loglevel: str = key("INFO", "console and log-file level", choices=LOG_LEVELS, section="Logging and tracking")
    logging_dir: str = key("logs", "folder of the daily log files (YYYYMMDD.log)")
    log_to_neptune: bool = key(False, "send the run to Neptune (needs the three neptune_* keys below)")
    neptune_username: str | None = key("<neptune.ai username>", "Neptune workspace (user name)")
    neptune_project_name: str | None = key("<neptune.ai project name>", "Neptune project name")
    neptune_api_token: str | None = key(
        None, "Neptune API token; prefer the NEPTUNE_API_TOKEN environment variable (never written to records)")
    neptune_mode: str = key("async", "Neptune connection mode: async (live), offline (sync later), debug",
                            choices=("async", "offline", "debug"))
    log_to_tensorboard: bool = key(True, "write TensorBoard events under the run folder")
    log_to_mlflow: bool = key(True, "log the run to MLflow, the runs dashboard (make dashboard)")
    mlflow_tracking_uri: str | None = key(
        None, "MLflow tracking URI: null: the SQLite file <output_path>/mlflow.db; sqlite:///path/mlflow.db; "
              "http://host:5000 (a shared mlflow server)")
    mlflow_experiment: str = key("cars", "MLflow experiment of the runs")
    mlflow_log_checkpoints: bool = key(False, "also store best.ckpt and last.ckpt as MLflow artifacts")
    tags: list[str] = key([], "tags of the run (MLflow and Neptune tags, summary.json)", LABEL)
    description: str | None = key("", "free-text description of the run (MLflow's run note)", LABEL)

    stanford_raw_data_path: str = key(
        "input/raw", "folder of the raw Stanford Cars files (car_ims.tgz, cars_annos.mat, car_devkit.tgz)",
        section="Locations")
    stanford_data_path: str = key("input/stanford", "prepared data folder (train.py -d overrides it)")
    output_path: str = key("output", "folder of the run folders (checkpoints, records, TensorBoard)")

    image_size: list[int] = key([227, 227], "network input size [height, width]", TRAINED, length=2, at_least=1,
                                section="Preprocessing", anchor="img_size")
    convert_to_grayscale: bool = key(False, "convert images to one grayscale channel", TRAINED)
    normalize: bool = key(True, "normalise tensors with the parameters of the colour mode", TRAINED)
    normalization_params_rgb: RGBNormalization = key(
        RGBNormalization(), "used when convert_to_grayscale is false", TRAINED)
    normalization_params_grayscale: GrayscaleNormalization = key(
        GrayscaleNormalization(), "used when convert_to_grayscale is true", TRAINED)
    crop_to_bboxes: bool = key(False, "crop training images to their bounding boxes", TRAINED,
                               section="Augmentation")
    erase_background: bool = key(
        False, "erase the background outside the box instead of cropping, keeping ratios (with crop_to_bboxes)",
        TRAINED)
    augment_images: bool = key(True, "apply image_augmentations to training images", TRAINED)
    image_augmentations: TransformSpec | None = key(
        THESIS_IMAGE_AUGMENTATIONS,
        "torchvision.transforms on PIL images, applied in order: {ClassName: {kwarg: value}}", TRAINED)
    augment_tensors: bool = key(False, "apply tensor_augmentations to training tensors", TRAINED)
    tensor_augmentations: TransformSpec | None = key(
        None, "torchvision.transforms on tensors, applied in order: {ClassName: {kwarg: value}}, "
              "e.g. {RandomErasing: {p: 0.5, scale: [0.02, 0.25]}}", TRAINED)

    architecture: str = key("ghost", "network name from models.arch_dict, or timm:<name> for a timm model (e.g. "
                                     "timm:ghostnet_100)", TRAINED, section="Network and training")
    pretrained_weights: str | None = key(
        None, "imagenet (the ImageNet weights of a timm:<name> or torchvision architecture), a torchvision weights "
              "name (e.g. IMAGENET1K_V1) or a weights file; the classifier is replaced. null trains from scratch",
        TRAINED)
    batch_size: int = key(64, "images per batch (per device)", TRAINED, at_least=1)
    num_epochs: int = key(200, "maximum number of epochs", TRAINED, at_least=1)
    early_stopping_patience: int | None = key(
        None, "epochs without valid_loss improvement before stopping; null: 15, or 3x ReduceLROnPlateau patience",
        TRAINED, at_least=0)
    dropout: float = key(0.2, "dropout rate before the last Linear layer", TRAINED, at_least=0, below=1)
    output_channels: int | None = key(
        320, "width of the layer before the classifier: ghost's last layer, a timm:<name> model's 1x1 head "
             "convolution (a fresh one when it differs from the model's); null: the architecture's own (ghost: "
             "1280)", TRAINED, at_least=1)
    optimizer: str = key("AdamW", "a torch.optim class name", TRAINED)
    optimizer_params: dict[str, Any] | None = key({"lr": 0.001, "weight_decay": 0.6},
                                                  "keyword arguments of the optimizer", TRAINED)
    lr_scheduler: str | None = key("MultiStepLR",
                                   "a torch.optim.lr_scheduler class name, or null for a constant learning rate",
                                   TRAINED)
    lr_scheduler_params: dict[str, Any] | None = key(
        {"gamma": 0.1, "milestones": [67, 82, 95, 107]},
        "keyword arguments of the scheduler (epochs); LambdaLR/MultiplicativeLR: lr_lambda: '0.975 ** epoch'",
        TRAINED)
    loss_function: str = key("LabelSmoothingCrossEntropy",
                             "LabelSmoothingCrossEntropy or a torch.nn loss class name", TRAINED)
    loss_params: dict[str, Any] | None = key(None, "keyword arguments of the loss (e.g. epsilon: 0.1)", TRAINED)

    warmup_epochs: int = key(
        0, "epochs of linear learning-rate warmup from warmup_start_factor x lr, then lr_scheduler (its epochs "
           "count from the end of the warmup); 0: off", TRAINED, at_least=0,
        section="Training options (docs/recipes.md)")
    warmup_start_factor: float = key(0.1, "learning rate of the first warmup epoch, as a fraction of lr", TRAINED,
                                     above=0, at_most=1)
    ema_decay: float = key(
        0.0, "exponential moving average of the weights (decay per optimizer step, warmed up from 0.1): validation, "
             "checkpoints and the final model use the average; 0: off", TRAINED, at_least=0, below=1)
    mixup_alpha: float = key(0.0, "MixUp of training batches with a Beta(alpha, alpha) share; 0: off", TRAINED,
                             at_least=0)
    cutmix_alpha: float = key(0.0, "CutMix of training batches (with mixup_alpha: one of the two per batch); 0: off",
                              TRAINED, at_least=0)
    gradient_clip_val: float | None = key(None, "clip the gradients' total norm to this value; null or 0: off",
                                          TRAINED, at_least=0)
    accumulate_grad_batches: int = key(1, "batches whose gradients are summed before each optimizer step", TRAINED,
                                       at_least=1)
    backbone_lr_scale: float = key(
        1.0, "learning rate of every layer but the classifier (and a fresh head) as a fraction of the head's; 1: "
             "one learning rate", TRAINED, above=0)
    freeze_backbone_epochs: int = key(
        0, "epochs during which only the classifier (and a fresh head) train; 0: off", TRAINED, at_least=0)

    seed: int | None = key(42, "seed of every random generator (workers too); null draws one", LABEL, at_least=0,
                           at_most=MAX_SEED, section="Reproducibility and hardware")
    num_workers: int | None = key(None, "data loader processes; null: the machine's cores, at most 8", at_least=0)
    pin_memory: bool | None = key(None,
                                  "page-locked loader memory for faster copies to the GPU; null: when CUDA is "
                                  "available")
    persistent_workers: bool = key(True, "keep the loader processes alive from one epoch to the next")
    prefetch_factor: int | None = key(None, "batches each loader process prepares ahead; null: torch's default (2)",
                                      at_least=1)
    cache_images: bool = key(False, "preprocess (crop, erase, resize, grayscale) once into uint8 cache files: same "
                                    "pixels, no JPEG decoding later")
    cache_path: str | None = key(None, "folder of the image cache files; null: <stanford_data_path>/.cache")
    augmentation_device: str = key(
        "cpu", "cpu: augment each image in the loader (torchvision); gpu: whole batches on the training device "
               "(kornia)", TRAINED, choices=("cpu", "gpu"))
    data_on_device: bool = key(
        False, "keep the cached uint8 images of both splits in the training device's memory and draw, augment and "
               "normalise batches there, with no loader processes (needs cache_images and augmentation_device: gpu)",
        TRAINED)
    validation_batch_size: int | None = key(
        None, "images per validation batch (per device); null: batch_size. Larger is faster on GPUs, same results",
        at_least=1)
    precision: int | str = key(32, "Trainer precision: 32, 16-mixed, bf16-mixed, ...", TRAINED, choices=PRECISIONS)
    channels_last: bool = key(False, "channels-last memory layout of network and inputs (faster with mixed "
                                     "precision on GPUs)", TRAINED)
    compile_model: bool = key(False, "torch.compile the network (compiles during the first steps)", TRAINED)
    compile_mode: str = key(
        "default", "torch.compile mode with compile_model: default, reduce-overhead (CUDA graphs: far fewer kernel "
                   "launches), max-autotune, max-autotune-no-cudagraphs", TRAINED, choices=COMPILE_MODES)
    cudnn_benchmark: bool = key(
        False, "on CUDA: cuDNN times its convolution algorithms on the first batches of each shape and keeps the "
               "fastest (results differ in the last bits; runs are no longer bit-reproducible)", TRAINED)
    profiler: str | None = key(
        None, "Lightning profiler of the run: null (none), simple (time of each hook), advanced (cProfile of each "
              "hook) or pytorch (torch.profiler: operator tables and a trace of 20 training steps after the first 15); "
              "reports in <run folder>/profile/", choices=("simple", "advanced", "pytorch"))
    accelerator: str = key("auto", "auto (CUDA when available, else CPU), gpu, cpu, mps, ...", choices=ACCELERATORS)
    devices: int | str | list[int] = key(1, "devices per node: a count, 'auto' or a list of indices", TRAINED)
    strategy: str = key("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...", TRAINED)
    num_nodes: int = key(1, "machines taking part (DDP)", TRAINED, at_least=1)

    def normalization(self) -> RGBNormalization | GrayscaleNormalization:
        """The normalisation parameters of the configured colour mode."""
        return self.normalization_params_grayscale if self.convert_to_grayscale else self.normalization_params_rgb


def config_keys() -> list[str]:
    """The top-level keys, in the order config.yml lists them."""
    return [item.name for item in fields(Config)]


def keys_of_kind(*kinds: str) -> tuple[str, ...]:
    """The top-level keys of the given kinds (TRAINED, LABEL, SETUP), in order."""
    return tuple(item.name for item in fields(Config) if key_info(item).kind in kinds)
