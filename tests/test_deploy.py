"""The deployment contract without a trained run: the JSON's steps against the code that preprocesses, the reference
implementation (deploy/reference_predict.py) against predict's preprocessing on photos of every kind, and the int8
export's refusal to write a model that loses accuracy."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.stanford_data import DRAFT_SCALES, input_contract, preprocess_image
from deploy import reference_predict
from models.quantization import export_int8
from tests.flat_settings import preprocessing
from tests.test_data_module import save_with_orientation

STEP_ORDER = ["first_frame", "exif_orientation", "reduced_scale_decode", "exif_transpose", "sixteen_bit_gray",
              "colour_mode", "box", "resize", "scale", "normalize"]


def test_the_contract_lists_every_step_in_order_with_the_runs_parameters():
    contract = input_contract(preprocessing((48, 64), grayscale=True, mean=(0.5,), std=(0.25,)))
    assert [step["step"] for step in contract["steps"]] == STEP_ORDER
    steps = reference_predict.steps_of(contract)
    assert steps["resize"] == {**steps["resize"], "filter": "bilinear", "size": [64, 48]}
    assert steps["colour_mode"]["mode"] == steps["reduced_scale_decode"]["mode"] == "L"
    assert steps["normalize"]["mean"] == [0.5] and steps["normalize"]["std"] == [0.25]
    assert steps["box"]["action"] == "crop" and steps["exif_orientation"]["tag"] == 0x0112
    erasing = input_contract(preprocessing((48, 64), crop_to_bboxes=True, erase_background=True, normalize=False))
    assert [step["step"] for step in erasing["steps"]] == STEP_ORDER[:-1]
    assert reference_predict.steps_of(erasing)["box"]["background"] == [255, 255, 255]
    assert json.loads(json.dumps(contract)) == contract


@pytest.mark.parametrize("stored", [(4032, 3024), (1816, 1816), (1815, 1816), (908, 681), (453, 1000), (50, 40)])
def test_the_contracts_reduced_scale_rule_is_pillows(stored):
    buffer = io.BytesIO()
    Image.new("RGB", stored, (120, 30, 200)).save(buffer, "JPEG", quality=60)
    for request in itertools.product((227, 100, 64, 33, 9), (227, 150, 48, 7)):
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            image.draft("RGB", request)
            image.load()
            assert image.size == reference_predict.decoded_size(stored, request, DRAFT_SCALES), request


def photos(folder):
    """Photos of each kind predict reads: a large JPEG stored sideways (EXIF 6) and mirrored (EXIF 2), a small
    PNG, a 16-bit grayscale PNG and a CMYK JPEG."""
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).resize((2400, 1800))
    save_with_orientation(picture, 6, folder / "exif6.jpg")
    save_with_orientation(picture, 2, folder / "exif2.jpg")
    picture.resize((120, 90)).save(folder / "small.png")
    Image.fromarray(rng.integers(0, 65535, (300, 400), dtype=np.uint16)).save(folder / "gray16.png")
    picture.convert("CMYK").save(folder / "cmyk.jpg")
    return [folder / name for name in ("exif6.jpg", "exif2.jpg", "small.png", "gray16.png", "cmyk.jpg")]


@pytest.mark.parametrize("settings", [{}, {"grayscale": True, "mean": (0.46,), "std": (0.25,)},
                                      {"crop_to_bboxes": True, "erase_background": True, "normalize": False}])
def test_the_reference_follows_the_contract_to_predicts_pixels(settings, tmp_path):
    chosen = preprocessing((40, 56), **settings)
    contract = json.loads(json.dumps(input_contract(chosen)))
    for photo in photos(tmp_path):
        for box in (None, (10, 20, 80, 70)):
            expected = preprocess_image(photo, chosen, box).numpy()
            assert np.array_equal(reference_predict.preprocess(photo, contract, box), expected), (photo, box)


def test_the_reference_stops_at_a_step_it_does_not_know(tmp_path):
    contract = {"input_name": "images", "output_name": "logits",
                "preprocessing": input_contract(preprocessing((32, 32)))}
    contract["preprocessing"]["steps"].insert(3, {"step": "sharpen", "amount": 2})
    (tmp_path / "m.onnx.json").write_text(json.dumps(contract))
    with pytest.raises(ValueError, match="unknown preprocessing step.*sharpen"):
        reference_predict.read_metadata(tmp_path / "m.onnx")


def test_an_int8_model_that_loses_accuracy_is_written_only_with_force(tmp_path):
    """Calibrated on blank images, int8 clips every activation to their ranges and answers one class."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                                  torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(16, 5)).eval()
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = network(images).argmax(dim=1).numpy()        # fp32 top-1 is 1.0 by construction
    target = tmp_path / "m.int8.onnx"
    blank = [np.zeros((4, 3, 16, 16), dtype=np.float32)]
    refused = export_int8(network, target, images[:4], {}, blank, [(images.numpy(), labels)], max_drop_points=1.0)
    assert not refused.written and refused.drop_points > 50 and list(tmp_path.iterdir()) == []
    assert refused.figures["fp32"].top1 == 1.0 and refused.figures["int8"].agreement == refused.figures["int8"].top1
    forced = export_int8(network, target, images[:4], {}, blank, [(images.numpy(), labels)], force=True)
    assert forced.written and forced.drop_points == refused.drop_points
    recorded = json.loads((tmp_path / "m.int8.onnx.json").read_text())["quantization"]
    assert recorded["top1_drop_points"] == pytest.approx(forced.drop_points) and recorded["calibration_images"] == 4
    batches = [images[:10].numpy(), images[10:20].numpy(), blank[0]]  # every batch's ranges count, not the last's
    # A random network's logits can lie close together: int8 rounding may flip an image or two (2.5 points each,
    # and which ones depends on the CPU's int8 kernels); ranges from the blank batch alone would lose over 50.
    calibrated = export_int8(network, tmp_path / "good.int8.onnx", images[:4], {}, batches, [(images.numpy(), labels)],
                             max_drop_points=10.0)
    assert calibrated.written and calibrated.drop_points <= 10.0 and calibrated.calibration_images == 24


def test_one_thread_latency_is_the_calling_threads_cpu_time_which_waiting_does_not_count():
    """The deploy table's clock: a call that waits (as when other jobs hold the cores) costs no CPU time."""
    import time

    from models.latency import clock_for, median_latency_ms

    assert clock_for(1) is time.thread_time and clock_for(2) is time.perf_counter
    waiting = lambda: time.sleep(0.02)  # noqa: E731
    assert median_latency_ms(waiting, repeats=3, warmup=0) >= 20
    assert median_latency_ms(waiting, repeats=3, warmup=0, clock=time.thread_time) < 5


def test_export_latencies_are_measured_alike_in_turns_and_the_line_says_how(tmp_path):
    """PyTorch and the export: the same threads, batch, warm-up and number of calls, called in turns."""
    from models.export import export_model
    from models.latency import Latency, medians_in_turns

    order = []
    medians_in_turns({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, 2))
    images, threads = torch.randn(4, 3, 16, 16), torch.get_num_threads()
    try:
        for count, clock in ((1, "CPU time of the calling thread"), (2, "wall time")):
            torch.set_num_threads(count)
            latency = export_model(network, tmp_path / f"m{count}.pt2", "pt2", images, {}, latency_repeats=4).latency
            assert (latency.threads, latency.clock, latency.repeats, latency.warmup) == (count, clock, 4, 3)
            assert f", {count} thread{'s' if count > 1 else ''} each, {clock}: PyTorch " in latency.line("pt2")
    finally:
        torch.set_num_threads(threads)
    assert export_model(network, tmp_path / "none.pt2", "pt2", images, {}, latency_repeats=0).latency is None
    on_gpu = Latency(1.5, 4.25, "cuda:0 (H100)", 2, 20, 3, "wall time").line("onnx")
    assert "PyTorch on cuda:0 (H100), onnx on the CPU with 2 threads, wall time: PyTorch 1.50 ms, onnx 4.25 ms" in on_gpu


class Squeeze(torch.nn.Module):
    """A squeeze-and-excitation unit's pooling (kept dims over H, W), and two means that are not that pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.conv(images)
        scaled = features * torch.sigmoid(features.mean((2, 3), keepdim=True))
        return scaled.mean((2, 3)) + scaled.mean(1, keepdim=True).flatten(1)[:, :4]


def test_spatial_means_become_global_average_pools_with_equal_outputs(tmp_path):
    """The dynamo exporter's ReduceMean over H, W with kept dims is rewritten to GlobalAveragePool (which
    onnxruntime quantizes); other means stay; the outputs do not change."""
    import onnx

    from models.export import export_model, onnx_session
    from models.onnx_graph import means_to_global_pools

    network, images = Squeeze().eval(), torch.randn(3, 3, 12, 12)
    report = export_model(network, tmp_path / "m.onnx", "onnx", images, {}, latency_repeats=0)
    exported = onnx.load(str(report.model_path))
    kinds = [node.op_type for node in exported.graph.node]
    assert kinds.count("GlobalAveragePool") == 1 and kinds.count("ReduceMean") == 2
    assert means_to_global_pools(exported) == 0                  # the export wrote the pool already
    with torch.no_grad():
        expected = network(images).numpy()
    np.testing.assert_allclose(onnx_session(report.model_path).run(None, {"images": images.numpy()})[0], expected,
                               rtol=0, atol=1e-5)
