"""The registry of generatable units: the one place that maps a unit name
used on the command line (``trilut synth --unit NAME``) to its component
class and default parameters."""
from dataclasses import dataclass, field

from ..hw.axi_read import AxiReadMaster
from ..hw.axi_write import AxiWriteMaster
from ..hw.dynquant import DynQuant, RowScaleRequantizer
from ..hw.gatemul import GateMul
from ..hw.int8mm import Int8Engine
from ..hw.layernorm import LayerNorm
from ..hw.matmul import DirectEngine, TLMMEngine
from ..hw.shiftgelu import ShiftGELU
from ..hw.requant import Requantizer, ResidualAdd
from ..hw.rmsnorm import RMSNorm
from ..hw.rope import RoPE
from ..hw.shiftmax import Shiftmax
from ..hw.top import Accelerator
from ..hw.wstore import WeightStore

__all__ = ["UNITS", "build_unit", "parse_settings"]


@dataclass(frozen=True)
class Unit:
    cls: type
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    #: ECP5 LUT mapper when ``--mapper`` is not given: ABC9 (timing-driven)
    #: where it maps in seconds; classic ABC for the accelerator tops, where
    #: ABC9 in WebAssembly runs 15-30+ minutes and may exhaust its stack.
    mapper: str = "abc9"


UNITS = {
    "tlmm": Unit(TLMMEngine, dict(group=3, tables=4, lanes=16, encoding="full",
                                  table_ram="block"),
                 "table-lookup ternary matmul engine"),
    "direct": Unit(DirectEngine, dict(group=3, tables=4, lanes=16),
                   "direct ternary adder-tree engine (baseline)"),
    "shiftmax": Unit(Shiftmax, dict(in_bits=8, n=15, out_bits=8, max_len=256),
                     "I-ViT Shiftmax, row-buffered, one divide per row"),
    "shiftgelu": Unit(ShiftGELU, dict(mode="ivit", max_len=256),
                      "I-ViT ShiftGELU (mode=ivit|accurate), pipelined reciprocal"),
    "layernorm": Unit(LayerNorm, dict(in_bits=8, max_len=768),
                      "integer LayerNorm, exact isqrt, one pass"),
    "requant": Unit(Requantizer, dict(acc_bits=32, out_bits=8, channels=64),
                    "dyadic requantizer, per-channel (m, e, bias), half-up"),
    "residual": Unit(ResidualAdd, dict(), "int16 residual add, one (m, e) per input"),
    "int8mm": Unit(Int8Engine, dict(lanes=8, k_per_cycle=8, max_k=768),
                   "int8 x int8 engine on MULT18X18D (requant=1 for int8 output)"),
    # codes and depth of the default tlmm engine (16 lanes x 4 tables x 5 bits)
    # at max_width 256: WeightStore.depth_for(engine, 256, 256) = 22 * 16.
    "wstore": Unit(WeightStore, dict(codes=320, depth=352),
                   "double-buffered weight store (replays a pass's wgt beats per row)"),
    "dynquant": Unit(DynQuant, dict(in_bits=16, max_len=4096),
                     "per-token dynamic quantization: row absmax -> int8 + carried absmax"),
    # The default accelerator (trilut demo, trilut bench block): room for the
    # built-in digits model, two blocks of hidden 64 / FFN 256 / 16 tokens;
    # the TLMM tables in block RAM (96 MACs/cycle), as on the ULX3S-85F: with
    # 256-deep distributed-RAM tables nextpnr did not finish routing.
    "top": Unit(Accelerator, dict(group=3, tables=2, lanes=16, encoding="full",
                                  table_ram="block", banks=2, max_rows=16, max_width=256,
                                  prog_depth=32, const_sets=20),
                "the whole accelerator: sequencer, TLMM + int8 engines, row units, AXI",
                mapper="abc"),
    # all-MiniLM-L6-v2 (hidden 384, 12 heads, FFN 1536; int8 weights on a
    # 64-MAC int8 engine, post-LN, per-token quantization, accurate GELU,
    # 16-bit probabilities) for up to 8 tokens: rows of 1536, three int16
    # regions of 8 rows, a weight store of one 384 x 1536 int8 matrix per
    # buffer, constants and program for all 6 layers traced. A simulation
    # build (trilut hf-layer); not sized for an ECP5.
    "top-minilm": Unit(Accelerator, dict(group=3, tables=2, lanes=4, encoding="folded",
                                         table_ram="distributed", banks=2, max_rows=24,
                                         max_width=1536, prog_depth=128, const_sets=60,
                                         attn_lanes=8, attn_kpc=8, gelu_mode="accurate",
                                         probs_bits=16, wstore_depth=9216),
                       "the accelerator sized for one all-MiniLM-L6-v2 layer (simulation)",
                       mapper="abc"),
    # The decoder builds (llm=True: RMSNorm as the NORM unit, GateMul behind
    # the up projection; host/llm_compiler runs every norm, ternary linear and
    # gate product of a layer on them). top-llm: the built-in LM (hidden 256,
    # FFN 688) in chunks of 32 tokens, 96 KV positions, the default top's
    # TLMM engine (96 MACs/cycle); top-llm-small: the random checkpoints of
    # tests/test_llm_top.py (hidden 64, FFN 128, chunks of 8, 24 positions).
    # Simulation builds.
    "top-llm": Unit(Accelerator, dict(group=3, tables=2, lanes=16, encoding="full",
                                      table_ram="block", banks=1, max_rows=384,
                                      max_width=688, prog_depth=64, const_sets=17, llm=True,
                                      llm_act="silu", llm_head_dim=64, probs_bits=16),
                    "the decoder build for the built-in LM (simulation)"),
    "top-llm-small": Unit(Accelerator, dict(group=3, tables=2, lanes=4, encoding="folded",
                                            table_ram="distributed", banks=1, max_rows=56,
                                            max_width=128, prog_depth=32, const_sets=16,
                                            llm=True, llm_act="silu", llm_head_dim=16,
                                            probs_bits=16),
                          "a small decoder build for the tests (simulation)"),
    "rowscale": Unit(RowScaleRequantizer, dict(channels=64),
                     "requantizer of a row-scaled accumulator (acc * absmax, then m, e)"),
    # The decoder's units, sized for the built-in LM (host/models/lm: hidden
    # 256, head_dim 64, FFN 688, SiLU, 256 positions).
    "rmsnorm": Unit(RMSNorm, dict(in_bits=16, max_len=256),
                    "decoder RMSNorm: LayerNorm rms mode + per-channel gamma requantizer, sign"),
    "rope": Unit(RoPE, dict(head_dim=64, max_pos=256, out_bits=8),
                 "RoPE (rotate_half, loaded int16 cos/sin table) + requantizer"),
    "gatemul": Unit(GateMul, dict(act="silu", max_len=688),
                    "gated MLP elementwise: SiLU (ShiftGELU accurate) or ReLU^2, * up, requant"),
    # The KV260's HP port width (128 bits), 4 bursts of 256 beats in flight.
    "axi_read": Unit(AxiReadMaster, dict(data_bits=128, outstanding=4),
                     "AXI4 read master: INCR bursts within 4 KB, credit-bounded buffer"),
    "axi_write": Unit(AxiWriteMaster, dict(data_bits=128, outstanding=4),
                      "AXI4 write master: AW/W/B, INCR bursts within 4 KB"),
}


def parse_settings(items):
    """``["group=3", "encoding=full"]`` -> ``{"group": 3, "encoding": "full"}``."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            out[name] = int(value, 0)
        except ValueError:
            out[name] = value
    return out


def build_unit(name, settings=None):
    """Instantiate unit ``name`` with its defaults overridden by ``settings``."""
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r}; choose from {', '.join(UNITS)}")
    params = {**UNITS[name].defaults, **(settings or {})}
    try:
        return UNITS[name].cls(**params), params
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"unit {name!r}: {exc}") from None
        raise
