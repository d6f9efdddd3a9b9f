"""Parameters and multiply-adds of every arch_dict entry against the published figures; the deploy table's counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.arch_dict import arch_dict, build_network
from models.sizes import count_multiply_adds, count_parameters
from benchmarks.deploy import main as deploy_table

# Published ImageNet figures (1000 classes): key -> (input size, params in M, multiply-adds in M or None).
PUBLISHED = {
    "ghost": (224, 5.2, 141),
    "mob_v2": (224, 3.5, 300),
    "shuff_v2_x05": (224, 1.4, 41), "shuff_v2_x10": (224, 2.3, 146),
    "shuff_v2_x15": (224, 3.5, 299), "shuff_v2_x20": (224, 7.4, 591),
    "eff_b0": (224, 5.3, 390), "eff_b1": (240, 7.8, 700), "eff_b2": (260, 9.2, 1000),
    "eff_b3": (300, 12, 1800), "eff_b4": (380, 19, 4200), "eff_b5": (456, 30, 9900),
    "eff_b6": (528, 43, 19000), "eff_b7": (600, 66, 37000),
    "sq_10": (224, 1.25, None), "sq_11": (224, 1.24, None),
    "sqnxt_1": (227, 0.72, 282),
    "hard_39dw": (224, 3.5, 440), "hard_68dw": (224, 4.2, 800),
    "hard_68": (224, 17.6, 4300), "hard_85": (224, 36.7, 9100),
}

UNPUBLISHED = {"hard_39", "hard_85dw", "sqnxt_1v5", "sqnxt_2", "sqnxt_2v5"}


def test_every_entry_is_compared_unless_it_has_no_published_figure() -> None:
    assert set(PUBLISHED) | UNPUBLISHED == set(arch_dict)


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_size_matches_the_paper(key: str) -> None:
    size, params, macs = PUBLISHED[key]
    with torch.device("meta"):
        network = build_network(key, num_classes=1000, output_channels=1280)
    assert count_parameters(network) / 1e6 == pytest.approx(params, rel=0.03)
    if macs is not None:
        assert count_multiply_adds(network, size, 3) / 1e6 == pytest.approx(macs, rel=0.10)


def test_ghost_has_the_parameter_count_every_320_wide_thesis_run_recorded() -> None:
    network = build_network("ghost", num_classes=196, output_channels=320)
    assert count_parameters(network) == 3_041_412


def test_wider_and_v5_squeezenext_are_larger() -> None:
    with torch.device("meta"):
        sizes = {key: count_parameters(build_network(key, 1000))
                 for key in ("sqnxt_1", "sqnxt_1v5", "sqnxt_2", "sqnxt_2v5")}
    assert sizes["sqnxt_1"] < sizes["sqnxt_1v5"] < sizes["sqnxt_2"] < sizes["sqnxt_2v5"]


def test_count_multiply_adds_counts_a_known_network_and_keeps_its_mode() -> None:
    network = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 10 * 12, 5))
    network.train()
    assert count_multiply_adds(network, (10, 12), 1) == 8 * 9 * 10 * 12 + 8 * 10 * 12 * 5
    assert network.training
    assert count_parameters(network) == 8 * 9 + 8 * 10 * 12 * 5 + 5


def test_the_deploy_table_counts_as_the_size_counters(capsys) -> None:
    rows = deploy_table(["--image-size", "32", "--num-classes", "10", "--architectures", "sq_11", "--repeats", "1",
                         "--calibration-images", "2"])
    lines = capsys.readouterr().out.splitlines()
    printed = [line.split("|")[1:-1] for line in lines if line.startswith("| sq_11 |")]
    with torch.device("meta"):
        network = build_network("sq_11", 10)
    assert [row.key for row in rows] == ["sq_11"] and len(printed) == 1
    assert rows[0].parameters == count_parameters(network)
    assert float(printed[0][1]) == round(rows[0].parameters / 1e6, 2)
    assert rows[0].multiply_adds == count_multiply_adds(network, 32, 3)
    assert rows[0].int8_bytes < rows[0].fp32_bytes / 2
