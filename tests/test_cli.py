"""The trilut command line: argument handling, errors, and one real run."""
import json

import pytest

from trilut.gen.cli import main
from trilut.gen.units import UNITS, build_unit, parse_settings


def test_units_lists_every_unit(capsys):
    assert main(["units"]) == 0
    out = capsys.readouterr().out
    for name in UNITS:
        assert name in out


def test_parse_settings():
    assert parse_settings(["group=4", "encoding=full", "lanes=0x10"]) == \
        {"group": 4, "encoding": "full", "lanes": 16}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_settings(["group"])


def test_build_unit_errors():
    with pytest.raises(ValueError, match="unknown unit 'fft'"):
        build_unit("fft")
    with pytest.raises(ValueError, match="unit 'tlmm'.*colour"):
        build_unit("tlmm", {"colour": 3})


def test_bad_parameter_is_a_clean_error(capsys):
    assert main(["synth", "--unit", "tlmm", "--set", "group=7"]) == 2
    assert "group must be in [2, 4], got 7" in capsys.readouterr().err


@pytest.mark.pnr
def test_synth_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    assert main(["synth", "--unit", "direct", "--set", "group=2", "--set", "tables=1",
                 "--set", "lanes=2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["unit"] == "direct" and report["macs_per_cycle"] == 4
    assert report["lut4"] > 0 and report["fmax_mhz"] > 100
    assert "fmax_mhz" in capsys.readouterr().out
