"""The main job, ``trilut demo``, end to end on a few images: the built-in
model compiled for the default accelerator, run on its Verilator simulation
through the host driver and the byte protocol, compared with golden."""
import json

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
    assert "every encoder output equal to golden" in printed
    # Board figures: 1 Mbaud at 5 MHz; the run covers its line bytes at 10
    # bits each, and the board rate is the clock over those cycles.
    assert (summary["board_mhz"], summary["baud"], summary["link_bytes_per_s"]) == (5, 1_000_000,
                                                                                    100_000)
    h2d, d2h = summary["link_bytes_host_to_device"], summary["link_bytes_device_to_host"]
    assert summary["link_bytes_per_image"] == h2d + d2h
    assert h2d > 16 * 64 and d2h > 16 * 64 * 2        # at least the input and the output
    eff = summary["link_efficiency"]
    assert eff["total"]["sent"] == h2d and 0 < eff["STREAM_WRITE"]["efficiency"] < 1
    cycles = summary["cycles_per_image_board"]
    assert cycles >= (h2d + d2h) * 50 > 4 * summary["cycles_per_image"]
    assert summary["images_per_s_board"] == round(5e6 / cycles, 2)
    assert summary["images_per_s_link"] == round(100_000 / (h2d + d2h), 2)
    assert summary["images_per_s_board"] <= summary["images_per_s_link"]
    assert "images_per_s_board" in printed and "on a ULX3S-85F build (5 MHz" in printed
    # The weights stay in the SDRAM: loaded once (timed apart), and an image
    # sends its input and a FEED only, no weight byte (33.5 KB before); the
    # one image here is the first, so it also carries the program and
    # constants (REG_WRITE), once.
    assert summary["dram"] == "sdram-32MB-litedram"
    assert summary["weights_bytes"] > 30_000 and summary["weights_load_s"] > 0
    assert summary["weights_load_link_bytes"] > summary["weights_bytes"]
    assert eff["FEED"]["requests"] == 1
    assert eff["STREAM_WRITE"]["payload"] == 16 * 64 * 2             # the input alone
    assert h2d - eff["REG_WRITE"]["sent"] < 16 * 64 * 2 + 400, h2d


def test_demo_rejects_bad_setting(capsys):
    assert main(["demo", "--images", "1", "--skip-synth", "--set", "max_width=2"]) == 2
    assert "max_width" in capsys.readouterr().err
    assert main(["demo", "--images", "1", "--skip-synth", "--board-images", "-1"]) == 2
    assert "--board-images must be >= 0" in capsys.readouterr().err
