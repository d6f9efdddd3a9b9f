"""architecture: timm:<name>, pretrained_weights (imagenet from the local cache, a file) and the weights' mean/std.

No test touches the network: weights files and the Hugging Face cache entry are written here from timm models."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import constants

from models.arch_dict import architecture_problems, build_network, weights_normalization
from models.fine_tuning import split_parameters
from models.pretrained import IMAGENET
from models.sizes import count_parameters
from models.timm_networks import HF_FILES
from training.run import RUN_CHECKS, train_seeds
from utils.config import load_config, parse_overrides
from utils.runs.records import read_summary

from tests.test_config import TEMPLATE

SMALL = "mobilenetv3_small_050"  # 1.6 M parameters, ImageNet weights on the hub, a 1x1 conv_head
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def timm_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of timm's `name` as its ImageNet form (3 channels, 1000 classes), random weights."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name).state_dict()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / f"{SMALL}.pth"
    torch.save(timm_state(SMALL), path)
    return path


def hub_cache_entry(cache, name: str) -> dict[str, torch.Tensor]:
    """An entry of timm's default weights of `name` in a Hugging Face cache folder, as the hub's download writes it."""
    import timm
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    state = timm_state(name, seed=5)
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "snapshots" / commit / HF_FILES[0])
    return state


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and HF_HUB_OFFLINE, as a machine without network that never downloaded."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_unknown_timm_names_get_timms_nearest():
    (problem,) = architecture_problems("timm:ghostnet100")
    assert "timm has no model 'ghostnet100'" in problem and "did you mean timm:ghostnet_100" in problem
    (problem,) = architecture_problems("ghostnet_100")
    assert "timm:<name>" in problem
    assert architecture_problems("timm:ghostnetv3_100") == []


def test_a_timm_network_takes_the_classes_channels_dropout_and_head_width():
    network = build_network("timm:ghostnet_050", num_classes=5, img_channels=1, dropout=0.3, output_channels=64)
    assert network.conv_stem.in_channels == 1 and network.drop_rate == 0.3
    assert network.conv_head.out_channels == 64 and network.get_classifier().in_features == 64
    assert network(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    own = build_network("timm:ghostnet_050", num_classes=5, output_channels=None)
    assert own.conv_head.out_channels == 1280 and count_parameters(own) > count_parameters(network)
    assert build_network("ghost", num_classes=5, output_channels=None).classifier.in_features == 1280
    (problem,) = architecture_problems("timm:resnet18", output_channels=320)
    assert problem.startswith("output_channels: timm:resnet18 has no 1x1 head convolution")
    assert architecture_problems("timm:resnet18", output_channels=None) == []


def test_a_weights_file_loads_with_the_stem_summed_for_grayscale_and_a_new_head(weights_file):
    assert architecture_problems(f"timm:{SMALL}", pretrained_weights=str(weights_file), img_channels=1) == []
    network = build_network(f"timm:{SMALL}", num_classes=3, img_channels=1, pretrained_weights=str(weights_file),
                            output_channels=None)
    expected, loaded = torch.load(weights_file, weights_only=True), network.state_dict()
    torch.testing.assert_close(loaded["conv_stem.weight"], expected["conv_stem.weight"].sum(1, keepdim=True))
    body = [key for key in expected if not key.startswith(("classifier", "conv_stem"))]
    assert body and all(torch.equal(loaded[key], expected[key]) for key in body)
    assert loaded["classifier.weight"].shape == (3, 1024)
    narrow = build_network(f"timm:{SMALL}", num_classes=3, pretrained_weights=str(weights_file), output_channels=32)
    backbone, head = split_parameters(narrow)  # the resized head convolution is fresh: it trains with the head
    assert {id(p) for p in narrow.conv_head.parameters()} <= {id(p) for p in head}
    assert torch.equal(narrow.state_dict()["blocks.0.0.conv_dw.weight"], expected["blocks.0.0.conv_dw.weight"])


def test_a_weights_file_of_another_model_is_refused_before_timm_ignores_it(tmp_path):
    path = tmp_path / "lcnet.pth"
    torch.save(timm_state("lcnet_050"), path)
    (problem,) = architecture_problems(f"timm:{SMALL}", pretrained_weights=str(path))
    assert problem.startswith(f"pretrained_weights: {path} does not fit timm:{SMALL}:")
    with pytest.raises(ValueError, match="does not fit"):
        build_network(f"timm:{SMALL}", 3, pretrained_weights=str(path))
    (problem,) = architecture_problems(f"timm:{SMALL}", pretrained_weights=str(tmp_path / "none.pth"))
    assert "is neither 'imagenet' nor an existing file" in problem


def test_imagenet_weights_come_from_the_local_cache_and_their_absence_is_said_before_any_work(offline_hub):
    (problem,) = architecture_problems(f"timm:{SMALL}", pretrained_weights=IMAGENET)
    assert "are not in the local cache" in problem and "HF_HUB_OFFLINE is set" in problem
    (problem,) = architecture_problems("timm:ghostnet_130", pretrained_weights=IMAGENET)
    assert "timm has no ImageNet weights for timm:ghostnet_130" in problem and "timm:ghostnet_100" in problem
    cached = hub_cache_entry(offline_hub, SMALL)
    assert architecture_problems(f"timm:{SMALL}", pretrained_weights=IMAGENET) == []
    network = build_network(f"timm:{SMALL}", 3, pretrained_weights=IMAGENET, output_channels=None)
    assert torch.equal(network.state_dict()["blocks.1.0.conv_pw.weight"], cached["blocks.1.0.conv_pw.weight"])


def test_torchvision_imagenet_weights_are_checked_in_torch_hubs_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    from models.pretrained import host_reachable
    from models.torchvision_networks import cached_weights_path, named_weights

    weights = named_weights("squeezenet1_1", IMAGENET)
    if not host_reachable(weights.url):
        (problem,) = architecture_problems("sq_11", pretrained_weights=IMAGENET)
        assert "are not in the local cache" in problem and "cannot be reached" in problem
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    assert architecture_problems("sq_11", pretrained_weights=IMAGENET) == []
    assert architecture_problems("sq_11", pretrained_weights="IMAGENET1K_V1") == []


def test_the_weights_mean_and_std_grayscale_as_luminance():
    assert weights_normalization("timm:ghostnet_100", IMAGENET, 3) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert weights_normalization("timm:ghostnet_100", IMAGENET, 1) == ([0.459], [0.2256])
    assert weights_normalization("mob_v2", "IMAGENET1K_V2", 3)[0] == [0.485, 0.456, 0.406]


@pytest.fixture(scope="module")
def tiny_prepared(make_prepared):
    return make_prepared("timm_runs", num_classes=3, images_per_class=4, min_width=40, max_width=64)


def run_with(tiny_prepared, tmp_path, *settings):
    overrides = [f"stanford_data_path={tiny_prepared}", f"output_path={tmp_path / 'out'}", "image_size=[32, 32]",
                 f"logging_dir={tmp_path / 'logs'}", "num_epochs=1", "batch_size=4", "num_workers=0",
                 "log_to_tensorboard=false", "log_to_mlflow=false", f"architecture=timm:{SMALL}", *settings]
    results = train_seeds(load_config(TEMPLATE, parse_overrides(overrides), RUN_CHECKS), [0])
    run_dir = results.runs[0]["run_dir"]
    return run_dir, read_summary(run_dir), yaml.safe_load(open(f"{run_dir}/config.yml"))


def test_a_pretrained_run_normalises_with_the_weights_statistics_unless_the_config_sets_its_own(
        tiny_prepared, weights_file, tmp_path):
    run_dir, summary, recorded = run_with(tiny_prepared, tmp_path, f"pretrained_weights={weights_file}",
                                          "output_channels=null")
    assert "timm-" + SMALL in run_dir and summary["state"] == "finished"
    assert summary["normalization"] == {"source": "pretrained weights", "mean": [0.485, 0.456, 0.406],
                                        "std": [0.229, 0.224, 0.225]}
    assert recorded["normalization_params_rgb"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    network = build_network(f"timm:{SMALL}", 3, output_channels=None)
    assert summary["parameters"] == count_parameters(network) and summary["multiply_adds"] > 0
    _, summary, _ = run_with(tiny_prepared, tmp_path, f"pretrained_weights={weights_file}",
                             "normalization_params_rgb={mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}")
    assert summary["normalization"]["source"] == "config" and summary["normalization"]["mean"] == [0.5, 0.5, 0.5]


def test_the_beyond_c50_study_passes_every_check_once_its_weights_are_cached(tiny_prepared, offline_hub, tmp_path,
                                                                            capsys):
    import sweep
    from sweeps.study_file import read_study

    study_path = TEMPLATE.parent / "experiments" / "beyond_c50.yml"
    study = read_study(study_path)
    assert len(study.configurations) == 9 and study.seed_count == 3
    arguments = [str(study_path), "-c", str(TEMPLATE), "--set", f"stanford_data_path={tiny_prepared}",
                 "--set", f"output_path={tmp_path / 'out'}", "--check"]
    assert sweep.main(arguments) == 2
    missing = capsys.readouterr().err
    assert "timm:ghostnet_100 (timm/ghostnet_100.in1k) are not in the local cache" in missing
    assert "timm:efficientnet_b0" in missing and "C-50:" not in missing
    for name in ("ghostnet_100", "efficientnet_b0"):
        hub_cache_entry(offline_hub, name)
    assert sweep.main(arguments) == 0, capsys.readouterr().err
