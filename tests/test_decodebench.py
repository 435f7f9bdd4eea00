# amaranth: UnusedElaboratable=no
"""``trilut bench decode`` in short (gen/decodebench.py): the smallest
decoder build (``top-llm-small`` with the simulated SDRAM) and a random
checkpoint, two prompt lengths and a decode step after each; the cycle
model of gen/llm_plan.py within 5% of the simulated decode counts (10% of
the prefills: host link, see below), and a model with a wrong memory rate
shown to miss them; the KV260 projection."""
import json

import pytest

from trilut.gen.decodebench import TELLME, projection, run_decode_bench
from trilut.gen.llm_plan import BITNET_0P73B, DecoderCost, Memory, kv260_ddr4, ulx3s_sdram
from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.gen.units import UNITS
from trilut.host.llama import load_llama, quantize
from trilut.host.llm_compiler import kv_capacity

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

MODEL = dict(hidden=64, layers=2, heads=4, ffn=128, vocab=256, max_pos=64, kv_heads=2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    params = quantize(load_llama(write_random_checkpoint(tmp / "ckpt", **MODEL, seed=5)))
    out = run_decode_bench("top-llm-small", prefill=(8, 64), steps=1,
                           json_path=tmp / "decode.json", log=lambda *a: None, params=params)
    return out, json.loads((tmp / "decode.json").read_text()), params


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_short_bench(bench):
    out, written, _ = bench
    assert written == json.loads(json.dumps(out, default=str))
    assert out["hw_matches_golden"] is True
    cap = kv_capacity(bench[2], UNITS["top-llm-small"].defaults)
    assert [(r["phase"], r["kv_pos"]) for r in out["points"]] == [
        ("prefill", 8), ("decode", 8), ("prefill", cap - 1), ("decode", cap - 1)]
    assert "P = 64 exceed the build's KV capacity of 28" in out["prefill_clipped"]
    # Decode (the weight stream) within 5% (-2.4% measured). A prefill on
    # this small build is mostly the host link's LOAD/STORE passes, which
    # the two-point link fit describes less well (-5.9%): held to 10%. The
    # counts do not depend on the machine's load (the harness stops the
    # clock on the host's turn: docs/host.md).
    for r in out["points"]:
        assert abs(r["model_error"]) <= (0.05 if r["phase"] == "decode" else 0.10), r
        assert 0 < r["macs_fraction_of_peak"] <= 1
    assert 0 < out["dram_bandwidth_utilization"] <= 1
    assert out["fmax_mhz"] is None and "no place and route" in out["fmax_note"]
    assert out["weight_bytes_per_token"] > 0 and out["sim_cycles_per_s"] > 0
    # The board's figure: decode steps simulated with the ULX3S-85F's 2 Mbaud
    # link (250 cycles a byte each way): a step takes longer than the
    # accelerator's part of it and than half its bytes' line time.
    board = out["board_link"]
    assert (board["clk_hz"], board["baud"], board["steps"]) == (50_000_000, 2_000_000, 2)
    # The first step writes the decode program, the next only kv_pos.
    assert board["first_step_cycles"] > board["sim_cycles_per_step"][1]
    assert board["link_bytes_per_step"][0] > board["link_bytes_per_step"][1]
    for sim, acc, nbytes in zip(board["sim_cycles_per_step"], board["accel_cycles_per_step"],
                                board["link_bytes_per_step"]):
        assert sim > acc and sim >= 250 * nbytes // 2
    assert 0 < out["tokens_per_s_board"] < out["tokens_per_s_at_board_clock"]


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_wrong_model_misses(bench):
    """The 5% check can fail: a model whose memory is twice as fast as the
    measured one misses the simulated decode cycles."""
    out, _, params = bench
    cost = DecoderCost(params.cfg, UNITS["top-llm-small"].defaults)
    mem = ulx3s_sdram()
    fast = Memory(mem.name, mem.clock_mhz, 2 * mem.bytes_per_cycle, mem.efficiency, "wrong")
    decode = [r for r in out["points"] if r["phase"] == "decode"]
    link = {k: (v["latency"], v["bytes_per_cycle"]) for k, v in out["model_link"].items()}
    for r in decode:
        model = cost.sim_step(1, fast, link, programs=out["segments_per_program"])[0]
        assert abs(model / r["cycles"] - 1) > 0.05


def test_projection():
    p = projection()
    assert p["rows"]["pl"]["tokens_per_s"] < p["rows"]["ps"]["tokens_per_s"]
    assert p["memory_peak_mb_s"] <= 19_200 and TELLME["tokens_per_s"] == 25.0
    cost = DecoderCost(BITNET_0P73B)
    # Memory-bound: a slower memory is slower; every linear's weights counted.
    assert cost.streamed(1, 64, kv260_ddr4(ports=1)) > cost.streamed(1, 64, kv260_ddr4())
    assert cost.layer_bytes() == sum(cost.blob_bytes(k, n) for k, n in
                                     cost.linears().values())
    with pytest.raises(ValueError, match="exceed the DDR4"):
        kv260_ddr4(ports=5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="not a decoder build"):
        run_decode_bench("top")
    with pytest.raises(ValueError, match="steps must be"):
        run_decode_bench("top-llm-small", steps=0)
    with pytest.raises(ValueError, match="prefill lengths"):
        run_decode_bench("top-llm-small", prefill=(0,))
