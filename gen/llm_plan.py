# amaranth: UnusedElaboratable=no
# (units are built here for their cycle models only)
"""Cycle estimate of the ternary LLM decoder on the accelerator (docs/llm.md
"Hardware plan"): the passes of one layer for prefill and decode, costed from
the engines' analytic cycle models (``cycles``/``fill_cycles``, checked by
their testbenches) and the decoder units' measured rates and latencies
(RMSNorm, RoPE, GateMul: one element per cycle, latencies checked cycle for
cycle in sim/tb_rmsnorm.py, tb_rope.py, tb_gatemul.py; Shiftmax: one row per
``max(L, 33)`` cycles).

Assumptions (stated, not measured): passes run one after another (no pass
overlap), every epilogue takes one result per cycle, each pass pays
``PASS_OVERHEAD`` cycles of descriptor check and pipeline fill, weights
arrive as fast as the engine takes them (on-chip or a fast enough DRAM).

With a :class:`Memory` the weights stream from external memory while the
passes run (the weight store loads the next pass's weights during the
current one): :meth:`DecoderCost.sim_step` costs the segments the host
runs on the simulated decoder build (host/llm_compiler.py: attention on the
host, so LOAD/STORE passes cross the host link) as the longer of the
passes' own work and the weight stream plus what follows the last linear;
:meth:`DecoderCost.streamed` costs the whole on-chip decoder (the plan
below) the same way, for projections. ``trilut bench decode``
(gen/decodebench.py) checks ``sim_step`` against the simulator.

``python -m trilut.gen.llm_plan [--json PATH]`` prints the tables.
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..golden.llm import LlamaConfig
from ..hw.dynquant import DynQuant
from ..hw.gatemul import GateMul
from ..hw.int8mm import Int8Engine
from ..hw.matmul import TLMMEngine
from ..hw.rmsnorm import RMSNorm
from ..hw.rope import RoPE
from ..hw.shiftmax import Shiftmax
from .units import UNITS

__all__ = ["BUILTIN_LM", "BITNET_0P73B", "DecoderCost", "Memory", "ulx3s_sdram", "kv260_ddr4",
           "main"]

PASS_OVERHEAD = 20          # descriptor check + register stages per pass (slice 5: ~10-20)
SHIFTMAX_DIVIDE = 33        # one SeqDivider per row: rows shorter than 33 wait for it
BUILTIN_LM = LlamaConfig(vocab=256, hidden=256, layers=4, heads=4, kv_heads=2, ffn=688,
                         head_dim=64, act="silu", max_pos=256)
#: BitNet b1.58 0.73B (1bitLLM/bitnet_b1_58-large): hidden 1536, 24 layers,
#: MHA 16 x 96, FFN 4096, SiLU, sub-norms, vocab 32002.
BITNET_0P73B = LlamaConfig(vocab=32002, hidden=1536, layers=24, heads=16, kv_heads=16,
                           ffn=4096, head_dim=96, act="silu", max_pos=2048, sub_norm=True)
SDRAM_JSON = Path(__file__).resolve().parents[1] / "docs" / "bench" / "sdram.json"
#: The KV260 projection's memory path (assumed, not measured): the weight
#: stream on KV260_PORTS of the PS's 128-bit HP ports at the PL clock (250
#: MHz: 4.0 GB/s a port; 4 ports, 16 GB/s, stay under the board's 64-bit
#: DDR4-2400, 19.2 GB/s), sustaining KV260_EFFICIENCY of that on long
#: sequential reads (the AXI master alone sustains 0.997 against a model
#: without refresh or arbitration, docs/bench/axi_master.json; DDR4 refresh,
#: page misses and the PS interconnect are not modelled: 0.85 is the
#: issue's bound, assumed).
KV260_MHZ, KV260_PORTS, KV260_PORT_BYTES, KV260_EFFICIENCY = 250.0, 4, 16, 0.85
KV260_DDR4_PEAK_MB_S = 19_200


@dataclass(frozen=True)
class Memory:
    """An external memory's weight stream: ``bytes_per_cycle`` at the
    accelerator's clock ``clock_mhz`` is its peak, ``efficiency`` the part
    of it sustained on long sequential reads; ``source`` says where the
    figures come from."""
    name: str
    clock_mhz: float
    bytes_per_cycle: float
    efficiency: float
    source: str

    @property
    def rate(self):
        """Sustained bytes per cycle."""
        return self.bytes_per_cycle * self.efficiency

    @property
    def peak_mb_s(self):
        return self.bytes_per_cycle * self.clock_mhz


def ulx3s_sdram(path=SDRAM_JSON):
    """The ULX3S SDRAM through LiteDRAM at the board clock, as measured by
    the SDRAM bench (docs/bench/sdram.json: sequential reads)."""
    d = json.loads(Path(path).read_text())
    return Memory("sdram-32MB-litedram", d["clock_mhz"], d["word_bits"] / 8,
                  d["seq_read_words_per_cycle"], f"measured ({Path(path).name}: "
                  f"{d['seq_read_words_per_cycle']} words/cycle sequential reads)")


def kv260_ddr4(ports=KV260_PORTS, efficiency=KV260_EFFICIENCY):
    """The KV260's DDR4 through ``ports`` HP ports (assumed: see KV260_*)."""
    if ports * KV260_PORT_BYTES * KV260_MHZ > KV260_DDR4_PEAK_MB_S:
        raise ValueError(f"{ports} HP ports exceed the DDR4's {KV260_DDR4_PEAK_MB_S} MB/s")
    return Memory("kv260-ddr4", KV260_MHZ, ports * KV260_PORT_BYTES, efficiency,
                  f"assumed: {ports} x 128-bit HP ports at {KV260_MHZ:g} MHz, {efficiency} of "
                  f"peak sustained")


class DecoderCost:
    """Per-pass cycle estimates for ``cfg`` on the engines of the build
    ``accel`` (an Accelerator parameter dict; default: the default ``top``'s)."""

    def __init__(self, cfg=BUILTIN_LM, accel=None):
        from ..hw.top import Accelerator
        top = dict(UNITS["top"].defaults if accel is None else accel)
        self.cfg, self.accel = cfg, top
        self.tlmm = TLMMEngine(group=top["group"], tables=top["tables"], lanes=top["lanes"],
                               encoding=top["encoding"], table_ram=top["table_ram"])
        self.int8 = Int8Engine(lanes=top.get("attn_lanes", 4), k_per_cycle=top.get("attn_kpc", 4))
        # Stream widths only (a model wider than the build's max_width is costed as if it fit).
        self.axis_bytes = Accelerator(**dict(top, max_width=min(top["max_width"], 2047))).axis_bytes
        c, d = cfg.hidden, cfg.head_dim
        self.rms = RMSNorm(in_bits=16, max_len=max(c, cfg.ffn))
        self.rope = RoPE(head_dim=d, max_pos=min(cfg.max_pos, 65536 * 2 // d), out_bits=8)
        self.gate = GateMul(act=cfg.act, max_len=cfg.ffn)
        self.smax = Shiftmax(in_bits=cfg.logit_bits, out_bits=cfg.probs_bits, max_len=cfg.max_pos)
        self.dynq = DynQuant(in_bits=16, max_len=max(c, cfg.ffn, cfg.heads * d))

    def linear(self, m, k, n, tail=0):
        """TLMM pass, per-token input quantization, an epilogue of ``tail`` cycles latency."""
        e = self.tlmm
        kb = -(-k // e.k_block)
        compute, fill = max((n // e.lanes) * kb, n), e.fill_cycles(kb)
        return (PASS_OVERHEAD + self.dynq.latency + k + fill + (m - 1) * max(compute, fill)
                + compute + e.latency + tail)

    def norm(self, m, c):
        u = self.rms.norm
        return PASS_OVERHEAD + m * u.row_interval(c) + self.rms.latency()

    def attention(self, m, pos0):
        """ATTN_QK (+ Shiftmax) and ATTN_AV over the visible prefixes, all heads."""
        cfg, e = self.cfg, self.int8
        d, qk, av = cfg.head_dim, 0, 0
        for i in range(m):
            vis = pos0 + i + 1
            qk += max(-(-vis // e.lanes) * -(-d // e.k_per_cycle), vis, SHIFTMAX_DIVIDE)
            av += max(-(-d // e.lanes) * -(-vis // e.k_per_cycle), d)
        last = pos0 + m
        return (PASS_OVERHEAD + cfg.heads * qk + e.latency + self.smax.latency(last),
                PASS_OVERHEAD + cfg.heads * av + e.latency)

    def layer(self, m, pos0):
        """[(pass, cycles)] of one decoder layer for ``m`` tokens at ``pos0``."""
        cfg = self.cfg
        c, f, qd, kd = cfg.hidden, cfg.ffn, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        qk, av = self.attention(m, pos0)
        passes = [("attn_norm", self.norm(m, c)),
                  ("q (RoPE)", self.linear(m, c, qd, self.rope.latency())),
                  ("k (RoPE, KV append)", self.linear(m, c, kd, self.rope.latency())),
                  ("v (KV append)", self.linear(m, c, kd)),
                  ("attn_qk + shiftmax", qk), ("attn_av", av),
                  ("o + residual", self.linear(m, qd, c))]
        if cfg.sub_norm:
            passes.insert(6, ("attn_sub_norm", self.norm(m, qd)))
        passes += [("mlp_norm", self.norm(m, c)), ("gate", self.linear(m, c, f)),
                   ("up + gatemul", self.linear(m, c, f, self.gate.latency())),
                   ("down + residual", self.linear(m, f, c))]
        if cfg.sub_norm:
            passes.insert(-1, ("ffn_sub_norm", self.norm(m, f)))
        return passes

    def head(self, m):
        cfg, e = self.cfg, self.int8
        rows = m * (cfg.vocab // e.lanes) * -(-cfg.hidden // e.k_per_cycle)
        return [("norm", self.norm(m, cfg.hidden)),
                ("lm head (int8)", PASS_OVERHEAD + rows + e.latency)]

    def weight_bytes(self):
        """Ternary weight bytes read per token (every linear once; G weights per
        code of ceil(log2(3^G)) bits) plus the int8 head."""
        cfg, g = self.cfg, self.tlmm.k_block // UNITS["top"].defaults["tables"]
        c, f, qd, kd = cfg.hidden, cfg.ffn, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        weights = c * (qd + 2 * kd) + qd * c + 3 * c * f
        code_bits = (3 ** g - 1).bit_length()
        return cfg.layers * -(-weights // g) * code_bits // 8 + cfg.hidden * cfg.vocab

    # --- weights from external memory --------------------------------------------

    def blob_bytes(self, k, n):
        """``s_axis_wgt`` bytes of a ternary ``k`` x ``n`` linear on this
        build: one engine beat (``lanes`` outputs x one k-block of codes) per
        transfer of ``axis_bytes``, as the memory holds them."""
        return (n // self.tlmm.lanes) * -(-k // self.tlmm.k_block) * self.axis_bytes

    def linears(self):
        """{name: (K, N)} of the ternary linears of one layer."""
        cfg = self.cfg
        c, f, qd, kd = cfg.hidden, cfg.ffn, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        return {"q": (c, qd), "k": (c, kd), "v": (c, kd), "o": (qd, c), "gate": (c, f),
                "up": (c, f), "down": (f, c)}

    def layer_bytes(self):
        """Weight bytes one layer reads from memory (every ternary linear once)."""
        return sum(self.blob_bytes(k, n) for k, n in self.linears().values())

    def _rows(self, m, elems, elem_bytes):
        return m * -(-elems * elem_bytes // self.axis_bytes) * self.axis_bytes

    def sim_attention(self, m, pos0):
        """ATTN_QK (+ causal Shiftmax) and ATTN_AV as the decoder build runs
        them (host/llm_compiler.py): every row over all N = pos0 + m keys (the
        masked keys' products are computed, zeros written for them), per
        head row the longest of the int8 engine's beats, the row's N
        outputs and Shiftmax's divider interval."""
        cfg, e = self.cfg, self.int8
        d, n = cfg.head_dim, pos0 + m
        qk = m * cfg.heads * max(-(-n // e.lanes) * -(-d // e.k_per_cycle), n, SHIFTMAX_DIVIDE)
        av = m * cfg.heads * max(-(-d // e.lanes) * -(-n // e.k_per_cycle), d)
        return (PASS_OVERHEAD + qk + e.latency + self.smax.latency(n),
                PASS_OVERHEAD + av + e.latency)

    def sim_segments(self, m, *, pos0=0, load_x=False, final=False):
        """The segments of one layer for ``m`` tokens at ``pos0`` as
        host/llm_compiler.py builds them: ``[[(kind, name, arg)]]``, kind
        "load"/"store" (arg: bytes over the host link), "norm" (arg: width),
        "linear" (arg: (k, n, epilogue latency)), "attn" (arg: cycles). With
        attention on chip (``llm_compiler.attn_on_chip``) one segment, else
        two with the host's RoPE and attention between them."""
        from ..host.llm_compiler import attn_on_chip
        cfg, lin = self.cfg, self.linears()
        c, f, qd, kd = cfg.hidden, cfg.ffn, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        a = [("load", "x", self._rows(m, c, 2))] if load_x else []
        a += [("norm", "attn_norm", c)]
        on_chip = attn_on_chip(cfg, self.accel)
        if on_chip:
            rope = self.rope.latency()
            a += [("linear", "q", (*lin["q"], rope)), ("linear", "k", (*lin["k"], rope)),
                  ("linear", "v", (*lin["v"], 0))]
            a += [("attn", name, cyc) for name, cyc in zip(("qk", "av"),
                                                           self.sim_attention(m, pos0))]
            b = []
        else:
            for name, elem in (("q", 2), ("k", 2), ("v", 1)):
                a += [("linear", name, (*lin[name], 0)),
                      ("store", name, self._rows(m, lin[name][1], elem))]
            b = [("load", "attn", self._rows(m, qd, 2))]
        b += [("norm", "attn_sub", qd)] if cfg.sub_norm else []
        b += [("linear", "o", (qd, c, 0)), ("norm", "mlp_norm", c),
              ("linear", "gate", (c, f, 0)), ("linear", "up", (c, f, self.gate.latency()))]
        b += [("norm", "ffn_sub", f)] if cfg.sub_norm else []
        b += [("linear", "down", (f, c, 0))]
        if final:
            b += [("norm", "norm", c), ("store", "norm", self._rows(m, c, 2))]
        return [a + b] if on_chip else [a, b]

    def segment_cycles(self, m, passes, memory, link):
        """Cycles of one segment (:meth:`sim_segments`) for ``m`` tokens:
        the longer of its passes' own work (a LOAD or STORE pass of B bytes
        takes ``latency + B / bytes_per_cycle`` of the host link, ``link`` =
        {"load": (latency, bytes_per_cycle), "store": (...)}) and the weight
        stream from ``memory`` plus the work after the last linear's last
        weight (its last row's results, the passes after it)."""
        work = feed = drain = 0.0
        for kind, _, arg in passes:
            if kind in ("load", "store"):
                latency, rate = link[kind]
                t = latency + arg / rate
            elif kind == "norm":
                t = self.norm(m, arg)
            elif kind == "attn":
                t = arg
            else:
                k, n, tail = arg
                t = self.linear(m, k, n, tail)
                feed += self.blob_bytes(k, n)
            work += t
            drain = (PASS_OVERHEAD + n + self.tlmm.latency + tail if kind == "linear"
                     else drain + t)
        return max(work, feed / memory.rate + drain)

    def sim_step(self, m, memory, link, pos0=0, programs=None):
        """Cycles of ``m`` tokens (one chunk) at ``pos0`` through every
        layer's segments on the simulated decoder build, weights streamed
        from ``memory``: ``(total, [cycles per program])``. ``programs``:
        how many consecutive segments each program runs
        (``llm_compiler.compile_chunk`` merges them; its programs'
        ``segments``); default one program per segment."""
        segs = [passes for li in range(self.cfg.layers)
                for passes in self.sim_segments(m, pos0=pos0, load_x=li == 0,
                                                final=li == self.cfg.layers - 1)]
        programs = [1] * len(segs) if programs is None else list(programs)
        if sum(programs) != len(segs):
            raise ValueError(f"programs {programs} do not cover the {len(segs)} segments")
        cycles, i = [], 0
        for n in programs:
            cycles.append(self.segment_cycles(m, [p for s in segs[i:i + n] for p in s],
                                              memory, link))
            i += n
        return sum(cycles), cycles

    def streamed(self, m, pos0, memory, head="pl"):
        """The whole decoder on chip (:meth:`layer`, attention included) for
        ``m`` tokens at ``pos0`` with every linear's weights streamed from
        ``memory`` (a linear takes the longer of its compute and its
        weights' transfer; the weight store loads the next pass's weights
        during the current one). ``head``: "pl" (the int8 LM head on the
        accelerator, its weights streamed too) or "ps" (on the host's
        cores: not counted here), for the last token only. Returns cycles."""
        names = {"q (RoPE)": "q", "k (RoPE, KV append)": "k", "v (KV append)": "v",
                 "o + residual": "o", "gate": "gate", "up + gatemul": "up",
                 "down + residual": "down"}
        lin = self.linears()
        total = 0
        for name, cyc in self.layer(m, pos0):
            if name in names:
                cyc = max(cyc, self.blob_bytes(*lin[names[name]]) / memory.rate)
            total += cyc
        total *= self.cfg.layers
        for name, cyc in self.head(1):          # the last position's logits only
            if name == "lm head (int8)":
                if head == "ps":
                    continue
                cyc = max(cyc, self.cfg.hidden * self.cfg.vocab / memory.rate)
            total += cyc
        return total

    def run(self, m, pos0):
        """Total cycles for ``m`` tokens at ``pos0`` (all layers and the head)."""
        layers = [self.layer(m, pos0) for _ in range(self.cfg.layers)]
        return sum(c for layer in layers for _, c in layer) + sum(c for _, c in self.head(m))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trilut.gen.llm_plan", description=__doc__)
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    ap.add_argument("--prompt", type=int, default=32, help="prefill length (default 32)")
    args = ap.parse_args(argv)
    cost = DecoderCost()
    cfg = cost.cfg
    out = {"config": {k: getattr(cfg, k) for k in ("hidden", "layers", "heads", "kv_heads",
                                                   "ffn", "head_dim", "act", "max_pos")},
           "pass_overhead": PASS_OVERHEAD, "tlmm_macs_per_cycle": cost.tlmm.lanes *
           cost.tlmm.k_block, "int8_macs_per_cycle": cost.int8.lanes * cost.int8.k_per_cycle}
    decode_at = (0, 63, 255)
    rows = {name: [] for name, _ in cost.layer(1, 0)}
    for pos in decode_at:
        for name, cyc in cost.layer(1, pos):
            rows[name].append(cyc)
    print(f"One layer, decode of one token at kv_pos = {', '.join(map(str, decode_at))} "
          f"(cycles):", file=sys.stderr)
    print(f"{'pass':24s}" + "".join(f"{p:>10d}" for p in decode_at))
    for name, cs in rows.items():
        print(f"{name:24s}" + "".join(f"{c:>10,d}" for c in cs))
    totals = {pos: cost.run(1, pos) for pos in decode_at}
    print(f"{'token (4 layers + head)':24s}" + "".join(f"{totals[p]:>10,d}" for p in decode_at))
    p = args.prompt
    pre = cost.run(p, 0)
    print(f"prefill of {p} tokens: {pre:,d} cycles ({pre / p:,.0f} per token)")
    wb = cost.weight_bytes()
    print(f"weights read per token: {wb:,d} bytes (ternary codes + int8 head)")
    out["weight_bytes_per_token"] = wb
    out.update({"decode_layer": {n: dict(zip(map(str, decode_at), cs)) for n, cs in rows.items()},
                "decode_token": {str(k): v for k, v in totals.items()},
                "prefill": {"tokens": p, "cycles": pre, "per_token": round(pre / p)}})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
