# amaranth: UnusedElaboratable=no
"""The main job, ``trilut demo``, end to end on a few images: the built-in
model (embedding, encoder and head) compiled for the default accelerator,
run on its Verilator simulation through the host driver and the byte
protocol, every image's logits compared with golden."""
import json
from dataclasses import replace

import numpy as np
import pytest

from trilut.gen.cli import main


@pytest.mark.sim
@pytest.mark.xdist_group("demo")
def test_demo_few_images(tmp_path, capsys):
    out = tmp_path / "demo.json"
    # The board-link run on one image at a 5 MHz build clock (1 Mbaud: 50
    # cycles per byte) keeps the test short; the real build's figures come
    # from the default (2 images at 50 MHz, 2 Mbaud).
    assert main(["demo", "--images", "2", "--skip-synth", "--json", str(out),
                 "--board-images", "1", "--board-mhz", "5"]) == 0
    summary = json.loads(out.read_text())
    for key in ("images", "accuracy_float", "accuracy_golden", "accuracy_hw",
                "hw_matches_golden", "cycles_per_image", "fmax_mhz", "images_per_s_at_fmax",
                "link_bytes_per_image", "link_bytes_per_s", "images_per_s_board"):
        assert key in summary
    assert summary["images"] == 2
    assert summary["hw_matches_golden"] is True
    assert summary["accuracy_hw"] == summary["accuracy_golden"]
    assert summary["cycles_per_image"] > 0 and summary["fmax_mhz"] is None
    printed = capsys.readouterr().out
    assert "every image's logits equal to golden" in printed
    # Board figures: 1 Mbaud at 5 MHz; the run covers its line bytes at 10
    # bits each, and the board rate is the clock over those cycles.
    assert (summary["board_mhz"], summary["baud"], summary["link_bytes_per_s"]) == (5, 1_000_000,
                                                                                    100_000)
    h2d, d2h = summary["link_bytes_host_to_device"], summary["link_bytes_device_to_host"]
    assert summary["link_bytes_per_image"] == h2d + d2h
    # At least the input (16 rows of 20 int8 features, 32-byte transfers)
    # and the logits (16 rows of 12 int16, one 32-byte transfer each).
    assert h2d > 16 * 32 and d2h > 16 * 32
    eff = summary["link_efficiency"]
    assert eff["total"]["sent"] == h2d and 0 < eff["STREAM_WRITE"]["efficiency"] < 1
    cycles = summary["cycles_per_image_board"]
    assert cycles >= (h2d + d2h) * 50 > 4 * summary["cycles_per_image"]
    assert summary["images_per_s_board"] == round(5e6 / cycles, 2)
    assert summary["images_per_s_link"] == round(100_000 / (h2d + d2h), 2)
    assert summary["images_per_s_board"] <= summary["images_per_s_link"]
    assert "images_per_s_board" in printed and "on a ULX3S-85F build (5 MHz" in printed
    # The weights stay in the SDRAM: loaded once (timed apart), and an image
    # sends its feature rows and a FEED only, no weight byte; the one image
    # here is the first, so it also carries the program and constants
    # (REG_WRITE), once. Without those the image is its input and logits.
    assert summary["dram"] == "sdram-32MB-litedram"
    assert summary["weights_bytes"] > 30_000 and summary["weights_load_s"] > 0
    assert summary["weights_load_link_bytes"] > summary["weights_bytes"]
    assert eff["FEED"]["requests"] == 1
    assert eff["STREAM_WRITE"]["payload"] == 16 * 32                 # the input alone
    assert eff["STREAM_READ"]["payload"] == 16 * 32                  # the logits alone
    assert h2d - eff["REG_WRITE"]["sent"] < 16 * 32 + 400, h2d
    assert h2d + d2h - eff["REG_WRITE"]["sent"] - eff["REG_WRITE"]["received"] < 4096


def test_demo_rejects_bad_setting(capsys):
    assert main(["demo", "--images", "1", "--skip-synth", "--set", "max_width=2"]) == 2
    assert "max_width" in capsys.readouterr().err
    assert main(["demo", "--images", "1", "--skip-synth", "--board-images", "-1"]) == 2
    assert "--board-images must be >= 0" in capsys.readouterr().err


@pytest.mark.sim
@pytest.mark.xdist_group("demo")
def test_hw_logits_equal_golden_and_a_wrong_model_is_caught():
    """The demo's hardware path on the ideal link: two images' logits equal
    to golden; the same logits against a slightly wrong golden head (one
    class's requantization multiplier 1% low) differ."""
    from trilut.gen.demo import run_hw
    from trilut.gen.units import UNITS
    from trilut.golden.classifier import classifier
    from trilut.host.models.digits.pipeline import DigitsPipeline

    pipe = DigitsPipeline()
    accel = UNITS["top"].cls(**UNITS["top"].defaults)
    images = pipe.x_test[5:7]
    res = run_hw(pipe, accel, images, progress=False)
    assert res["out"].shape == (2, 16, 11) and np.array_equal(res["out"], pipe.logits(images))
    emb, enc, head = pipe.classifier_params
    m = head.linear.requant.m.copy()
    m[4] -= m[4] // 100
    wrong = replace(head, linear=replace(head.linear, requant=replace(head.linear.requant, m=m)))
    assert not np.array_equal(res["out"], classifier(pipe.features(images), emb, enc, wrong))
