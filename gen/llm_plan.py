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

``python -m trilut.gen.llm_plan [--json PATH]`` prints the tables.
"""
import argparse
import json
import sys
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

__all__ = ["BUILTIN_LM", "DecoderCost", "main"]

PASS_OVERHEAD = 20          # descriptor check + register stages per pass (slice 5: ~10-20)
SHIFTMAX_DIVIDE = 33        # one SeqDivider per row: rows shorter than 33 wait for it
BUILTIN_LM = LlamaConfig(vocab=256, hidden=256, layers=4, heads=4, kv_heads=2, ffn=688,
                         head_dim=64, act="silu", max_pos=256)


class DecoderCost:
    """Per-pass cycle estimates for ``cfg`` on the default ``top``'s engines."""

    def __init__(self, cfg=BUILTIN_LM):
        top = UNITS["top"].defaults
        self.cfg = cfg
        self.tlmm = TLMMEngine(group=top["group"], tables=top["tables"], lanes=top["lanes"],
                               encoding=top["encoding"], table_ram=top["table_ram"])
        self.int8 = Int8Engine(lanes=4, k_per_cycle=4)     # the top's attn_lanes / attn_kpc
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
