"""The decoder cycle estimate (gen/llm_plan.py): consistent totals, attention
growing with kv_pos, sub-norm passes, and the JSON it writes."""
import dataclasses
import json

import pytest

from trilut.gen.llm_plan import BUILTIN_LM, DecoderCost, main

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def test_totals_and_growth():
    cost = DecoderCost()
    layer0, layer255 = dict(cost.layer(1, 0)), dict(cost.layer(1, 255))
    assert layer0.keys() == layer255.keys()
    for name in layer0:
        if name in ("attn_qk + shiftmax", "attn_av"):
            assert layer255[name] > layer0[name]
        else:
            assert layer255[name] == layer0[name]
    assert cost.run(1, 0) == BUILTIN_LM.layers * sum(layer0.values()) + sum(
        c for _, c in cost.head(1))
    assert cost.run(4, 0) < 4 * cost.run(1, 3)      # prefill amortizes the table build


def test_sub_norm_and_relu2():
    cfg = dataclasses.replace(BUILTIN_LM, sub_norm=True, act="relu2")
    names = [n for n, _ in DecoderCost(cfg).layer(1, 0)]
    assert names.index("attn_sub_norm") == names.index("o + residual") - 1
    assert names.index("ffn_sub_norm") == names.index("down + residual") - 1


def test_main_writes_json(tmp_path, capsys):
    path = tmp_path / "plan.json"
    out = main(["--json", str(path), "--prompt", "4"])
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    assert out["prefill"]["tokens"] == 4 and out["weight_bytes_per_token"] > 0
    assert "token (4 layers + head)" in capsys.readouterr().out
