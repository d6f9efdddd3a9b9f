"""Every arch_dict entry trains and predicts; GhostNet follows Table 1; dropout and head options work."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

import models
from models.arch_dict import arch_dict, build_network
from models.arch_dict import MIN_INPUT_SIZE, architecture_problems
from models.architectures.ghostnet import GhostBottleneck, thesis_squeeze_excitation
from models.torchvision_networks import TORCHVISION_MODELS
from utils.config import Config, ConfigError, load_config
from utils.config.validation import validate

EXPECTED_KEYS = (
    ["ghost", "sq_10", "sq_11", "sqnxt_1", "sqnxt_1v5", "sqnxt_2", "sqnxt_2v5", "mob_v2"]
    + [f"eff_b{i}" for i in range(8)]
    + ["hard_39", "hard_39dw", "hard_68", "hard_68dw", "hard_85", "hard_85dw"]
    + ["shuff_v2_x05", "shuff_v2_x10", "shuff_v2_x15", "shuff_v2_x20"]
)

# GhostNet paper, Table 1: (input size at 224, #exp, #out, SE, stride) of each G-bneck.
TABLE_1 = [
    (112, 16, 16, False, 1), (112, 48, 24, False, 2), (56, 72, 24, False, 1), (56, 72, 40, True, 2),
    (28, 120, 40, True, 1), (28, 240, 80, False, 2), (14, 200, 80, False, 1), (14, 184, 80, False, 1),
    (14, 184, 80, False, 1), (14, 480, 112, True, 1), (14, 672, 112, True, 1), (14, 672, 160, True, 2),
    (7, 960, 160, False, 1), (7, 960, 160, True, 1), (7, 960, 160, False, 1), (7, 960, 160, True, 1),
]


def test_arch_dict_has_exactly_the_original_keys() -> None:
    assert list(arch_dict) == EXPECTED_KEYS


@pytest.mark.parametrize("size", [64, 227])
@pytest.mark.parametrize("img_channels", [1, 3])
@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_forward_and_backward(key: str, img_channels: int, size: int) -> None:
    torch.manual_seed(0)
    network = build_network(key, num_classes=5, img_channels=img_channels, dropout=0.2)
    logits = network(torch.randn(2, img_channels, size, size))
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    first_conv = next(m for m in network.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == img_channels
    assert first_conv.weight.grad is not None and torch.isfinite(first_conv.weight.grad).all()
    assert first_conv.weight.grad.abs().sum() > 0


def _accepts(network: nn.Module, height: int, width: int) -> bool:
    try:
        network(torch.empty(1, 3, height, width, device="meta"))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_min_input_size_is_the_smallest_height_and_width_each_network_takes(key: str) -> None:
    smallest = MIN_INPUT_SIZE.get(key, 1)
    with torch.device("meta"):
        network = build_network(key, num_classes=5).eval()
    assert _accepts(network, smallest, smallest) and _accepts(network, smallest, 227)
    if smallest > 1:
        assert not _accepts(network, smallest - 1, 227) and not _accepts(network, 227, smallest - 1)
        problems = architecture_problems(key, [227, smallest - 1])
        assert problems == [f"image_size: [227, {smallest - 1}] is too small for {key}; "
                            f"height and width must be at least {smallest}"]
    assert architecture_problems(key, [smallest, smallest]) == []


def test_unknown_key_lists_valid_keys() -> None:
    problems = architecture_problems("ghostnet")
    assert len(problems) == 1
    assert "ghostnet" in problems[0] and "did you mean ghost" in problems[0]
    assert all(key in problems[0] for key in EXPECTED_KEYS)
    with pytest.raises(ValueError) as error:
        build_network("ghostnet", num_classes=3)
    assert str(error.value) == problems[0]


def test_config_problems_reports_architecture_and_optimization_together() -> None:
    problems = models.config_problems(Config(architecture="resnet", loss_function="NoSuchLoss",
                                             optimizer="NoSuchOptimizer"))
    assert any(p.startswith("architecture:") for p in problems)
    assert any(p.startswith("loss_function:") for p in problems)
    assert any("NoSuchOptimizer" in p for p in problems)


def test_valid_config_has_no_architecture_problems() -> None:
    cfg = Config(architecture="ghost", dropout=0.2, output_channels=320, pretrained_weights=None)
    assert architecture_problems(cfg.architecture, cfg.image_size, cfg.pretrained_weights) == []


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"), ({"dropout": "0.2"}, "dropout"),
        ({"dropout": True}, "dropout"), ({"output_channels": 0}, "output_channels"),
        ({"output_channels": 3.5}, "output_channels"), ({"architecture": 3}, "architecture"),
    ],
)
def test_bad_values_are_problems(cfg: dict, key: str) -> None:
    problems = architecture_problems(cfg["architecture"]) if key == "architecture" else validate(cfg)[1]
    assert len(problems) == 1 and problems[0].startswith(f"{key}:")


def test_all_problems_are_reported_together(tmp_path) -> None:
    (tmp_path / "bad.yml").write_text("architecture: x\ndropout: 2\noutput_channels: -1\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yml", checks=[models.config_problems])
    assert [p.split(":")[0] for p in error.value.problems] == ["dropout", "output_channels", "architecture"]


def test_ghostnet_follows_table_1() -> None:
    network = build_network("ghost", num_classes=1000, output_channels=1280).eval()
    bottlenecks = [m for m in network.modules() if isinstance(m, GhostBottleneck)]
    assert len(bottlenecks) == len(TABLE_1)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape))) for b in bottlenecks]
    with torch.no_grad():
        network(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    assert shapes[0][0] == (1, 16, 112, 112)  # stem: Conv2d 3x3, 16 channels, stride 2
    for (size, expansion, out, se, stride), block, (in_shape, out_shape) in zip(TABLE_1, bottlenecks, shapes):
        assert in_shape[2:] == (size, size)
        assert out_shape[1:] == (out, size // stride, size // stride)
        assert block.ghost1.out_channels == expansion
        assert isinstance(block.se, SqueezeExcitation) == se
        if se:
            assert block.se.fc1.out_channels == expansion // 4
        if stride == 2:
            assert block.conv_dw[0].stride == (2, 2) and block.conv_dw[0].groups == expansion
        cheap = block.ghost1.cheap_operation[0]
        assert cheap.kernel_size == (3, 3) and cheap.groups == cheap.in_channels == expansion // 2
    assert network.last_conv[0].out_channels == 960
    assert network.head[0].in_features == 960 and network.head[0].bias is None
    assert isinstance(network.head[1], nn.BatchNorm1d)


@pytest.mark.parametrize("key", ["ghost", "sqnxt_1", "hard_39dw"])
def test_hand_written_networks_share_timms_classifier_interface(key):
    network = build_network(key, num_classes=7).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = network.forward_features(images)
        assert features.dim() == 4
        torch.testing.assert_close(network.forward_head(features), network(images))
        assert network.forward_head(features, pre_logits=True).shape == (2, network.classifier.in_features)
        before = {name: tensor.clone() for name, tensor in network.state_dict().items()
                  if not name.startswith("classifier")}
        network.reset_classifier(4)
        assert network(images).shape == (2, 4)
        torch.testing.assert_close(network.forward_features(images), features)
    assert all(torch.equal(tensor, network.state_dict()[name]) for name, tensor in before.items())


def test_thesis_se_unit_gates_with_clamp_to_0_1() -> None:
    se = thesis_squeeze_excitation(8)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.eye(2, 8).view(2, 8, 1, 1))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4).view(8, 2, 1, 1))
        se.fc2.bias.zero_()
    x = torch.ones(1, 8, 2, 2)
    x[:, 0] = 3.0
    x[:, 1] = 0.25
    gate = torch.tensor([1.0] * 4 + [0.25] * 4).view(1, 8, 1, 1)
    torch.testing.assert_close(se(x), x * gate)


def test_ghostnet_shortcut_changes_shape_with_depthwise_and_pointwise_conv() -> None:
    network = build_network("ghost", num_classes=10)
    bottlenecks = [m for m in network.modules() if isinstance(m, GhostBottleneck)]
    assert isinstance(bottlenecks[0].shortcut, nn.Identity)
    depthwise, pointwise = bottlenecks[1].shortcut[0][0], bottlenecks[1].shortcut[1][0]
    assert depthwise.groups == 16 and depthwise.stride == (2, 2)
    assert pointwise.kernel_size == (1, 1) and (pointwise.in_channels, pointwise.out_channels) == (16, 24)


def test_ghostnet_width_multiplier_scales_channels_to_multiples_of_4() -> None:
    network = arch_dict["ghost"](num_classes=10, output_channels=64, width=0.5)
    bottlenecks = [m for m in network.modules() if isinstance(m, GhostBottleneck)]
    assert [b.ghost2.out_channels for b in bottlenecks][-1] == 80
    assert bottlenecks[1].ghost2.out_channels == 12
    assert network.last_conv[0].out_channels == 480
    assert network(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_output_channels_sets_the_head_width() -> None:
    small = build_network("ghost", num_classes=7, output_channels=100)
    large = build_network("ghost", num_classes=7, output_channels=300)
    assert small.head[0].out_features == 100 and small.classifier.in_features == 100
    per_channel = 960 + 2 + 7  # Linear(960 -> c) weights, BatchNorm weight and bias, classifier weights
    extra = sum(p.numel() for p in large.parameters()) - sum(p.numel() for p in small.parameters())
    assert extra == 200 * per_channel


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_dropout_sets_the_classifier_dropout(key: str) -> None:
    network = build_network(key, num_classes=4, dropout=0.37)
    rates = [m.p for m in network.modules() if isinstance(m, nn.Dropout)]
    assert 0.37 in rates


def test_dropout_changes_ghostnet_training_output() -> None:
    images = torch.randn(4, 3, 64, 64)
    for dropout, should_repeat in ((0.0, True), (0.5, False)):
        torch.manual_seed(0)
        network = build_network("ghost", num_classes=4, dropout=dropout).train()
        assert torch.equal(network(images), network(images)) == should_repeat


def grayscale_features(key: str, weights_file: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stem-to-features output of the 1-channel and 3-channel nets from one file, on one gray image."""
    gray = torch.rand(1, 1, 64, 64)
    rgb_net = build_network(key, 3, img_channels=3, pretrained_weights=weights_file).eval()
    gray_net = build_network(key, 3, img_channels=1, pretrained_weights=weights_file).eval()
    with torch.no_grad():
        return gray_net.features(gray), rgb_net.features(gray.expand(1, 3, 64, 64))


@pytest.mark.parametrize("key", ["mob_v2", "sq_11", "shuff_v2_x05", "eff_b0"])
def test_pretrained_weights_load_from_a_file(key: str, tmp_path) -> None:
    model_name = TORCHVISION_MODELS[key]
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.get_model(model_name, weights=None)
    path = tmp_path / f"{model_name}.pth"
    torch.save(reference.state_dict(), path)
    assert architecture_problems(key, pretrained_weights=str(path)) == []
    network = build_network(key, num_classes=9, dropout=0.1, pretrained_weights=str(path))
    expected = reference.state_dict()
    loaded = network.state_dict()
    shared = [name for name in expected if name in loaded and loaded[name].shape == expected[name].shape]
    assert len(shared) >= len(expected) - 2
    assert all(torch.equal(loaded[name], expected[name]) for name in shared)
    assert network(torch.randn(2, 3, 64, 64)).shape == (2, 9)


def test_grayscale_pretrained_stem_sums_rgb_weights(tmp_path) -> None:
    import torchvision

    path = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    from_gray, from_rgb = grayscale_features("mob_v2", str(path))
    torch.testing.assert_close(from_gray, from_rgb, rtol=1e-4, atol=1e-4)


def test_pretrained_weights_problems() -> None:
    hand_written = architecture_problems("ghost", pretrained_weights="IMAGENET1K_V1")
    assert len(hand_written) == 1 and "ghost" in hand_written[0] and "mob_v2" in hand_written[0]
    unknown = architecture_problems("mob_v2", pretrained_weights="IMAGENET_V9")
    assert len(unknown) == 1 and "IMAGENET1K_V1" in unknown[0] and "IMAGENET1K_V2" in unknown[0]
    missing = architecture_problems("eff_b0", pretrained_weights="/no/such/weights.pth")
    assert len(missing) == 1 and "/no/such/weights.pth" in missing[0]
    with pytest.raises(ValueError, match="no/such"):
        build_network("eff_b0", 5, pretrained_weights="/no/such/weights.pth")


def test_weights_file_of_another_model_is_a_clear_error(tmp_path) -> None:
    import torchvision

    path = tmp_path / "shufflenet.pth"
    torch.save(torchvision.models.shufflenet_v2_x0_5().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit torchvision's mobilenet_v2"):
        build_network("mob_v2", 5, pretrained_weights=str(path))
    problems = architecture_problems("mob_v2", pretrained_weights=str(path))
    assert len(problems) == 1 and "does not fit torchvision's mobilenet_v2" in problems[0]
    assert "features.0.0.weight" in problems[0]
    text = tmp_path / "config.yml"
    text.write_text("architecture: mob_v2\n")
    (problem,) = architecture_problems("mob_v2", pretrained_weights=str(text))
    assert problem.startswith(f"pretrained_weights: {text} is not a PyTorch weights file")
