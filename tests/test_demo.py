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
    assert main(["demo", "--images", "2", "--skip-synth", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    for key in ("images", "accuracy_float", "accuracy_golden", "accuracy_hw",
                "hw_matches_golden", "cycles_per_image", "fmax_mhz", "images_per_s_at_fmax"):
        assert key in summary
    assert summary["images"] == 2
    assert summary["hw_matches_golden"] is True
    assert summary["accuracy_hw"] == summary["accuracy_golden"]
    assert summary["cycles_per_image"] > 0 and summary["fmax_mhz"] is None
    assert "every encoder output equal to golden" in capsys.readouterr().out


def test_demo_rejects_bad_setting(capsys):
    assert main(["demo", "--images", "1", "--skip-synth", "--set", "max_width=2"]) == 2
    assert "max_width" in capsys.readouterr().err
