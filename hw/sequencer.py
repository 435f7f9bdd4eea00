"""The accelerator's sequencer: fetch a descriptor, check it, issue its pass.

States: IDLE -> FETCH (program read) -> LATCH (descriptor register) ->
CHECK1 -> CHECK2 -> CHECK3 -> DISPATCH -> [PARAM] -> RUN -> FETCH ...
The checks are a three-stage registered pipeline, so no comparison chain
sits in one cycle:

* CHECK1 registers the decoded flags (:data:`FLAGS`), the row-range ends
  (base + rows), heads x K and heads x N, and the loop bounds of the
  engines (ceil(K / k_block) by :func:`~trilut.hw.arith.const_div`);
* CHECK2 registers the facts (:class:`_Facts`): every comparison of a
  field or of a CHECK1 value against a build limit;
* CHECK3 registers one "bad" bit per error code from the opcode's row of
  :func:`rules` (each bit an AND/OR of a few facts);
* DISPATCH stops with the first bad bit's code (precedence: the order of
  :class:`~trilut.hw.isa.ErrorCode`), ends the program on END, or starts the
  pass: PARAM first copies the pass's constant entries (the rule's
  ``consts``: one per output channel, or one per tensor) out of the
  constant memory as the ``param`` stream (one entry per cycle, registered:
  the first :data:`~trilut.hw.memories.CONST_READ_LATENCY` + 1 cycles after
  PARAM starts), then RUN until ``pass_done``. On a decoder build (``llm``)
  a LINEAR with the ``uniform`` bit (:data:`~trilut.hw.isa.LLM_FIELDS`)
  reads the one entry its ``heads`` field names for every output channel:
  the copy still streams N entries (``index`` 0 .. N - 1, the same cycles),
  only the constant-memory address is {set, entry} instead of {set, index}.

On a decoder build the ``kv_off`` input (the ``kv_pos`` register,
:data:`~trilut.hw.isa.KV_POS_DOC`) is added in LATCH, as the descriptor is
registered, to its ``kv_pos``, to a ``src_row`` / ``dst_row`` in the KV
region and to the key count (ATTN_QK ``n``, ATTN_AV ``k``), so every check
and the pass see the moved fields; a sum beyond 12 bits stops the program
with ROWS.

A descriptor costs six cycles (FETCH to DISPATCH) before its pass starts.
``cfg`` (the descriptor, its flags and the per-pass values) is held stable
from CHECK1 to the end of the pass; ``go`` pulses once when the pass's data
phase starts, ``run`` is high during it. A datapath unit's error
(``unit_err``) during RUN stops the program with UNIT; a program that runs
past the last descriptor without END stops with PC.

Adding an opcode: its :class:`~trilut.hw.isa.Opcode` value, one row in
:func:`rules` (its checks and constants); its flag ``is_<name>`` appears in
:data:`FLAGS` by itself.
"""
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import const_div, delay, valid_delay
from .isa import (CONST_BITS, DESCRIPTOR, DESCRIPTOR_BITS, KEY_BANK, RESIDUAL_BANK, VALUE_BANK,
                  EngineKind, Epilogue, ErrorCode, Head, Opcode)
from .memories import CONST_READ_LATENCY
from .rowio import bits_for

__all__ = ["FLAGS", "PARAM", "Rule", "Sequencer", "cfg_layout", "rules"]

FIELD_MAX = (1 << isa.ROW_BITS) - 1     # largest K, N, rows of a descriptor

#: Decoded descriptor flags (registered in CHECK1): ``is_<opcode>`` for every
#: opcode, and the groups and bank / epilogue / engine kinds the datapath routes by.
FLAGS = {
    **{f"is_{op.name.lower()}": (lambda d, op=op: d.opcode == op) for op in Opcode},
    "is_attn": lambda d: (d.opcode == Opcode.ATTN_QK) | (d.opcode == Opcode.ATTN_AV),
    "epi_res": lambda d: d.epilogue == Epilogue.RESIDUAL,
    "epi_gelu": lambda d: d.epilogue == Epilogue.REQUANT_GELU,
    "src_res": lambda d: d.src_bank == RESIDUAL_BANK,
    "dst_res": lambda d: d.dst_bank == RESIDUAL_BANK,
    "src_kv": lambda d: (d.src_bank == KEY_BANK) | (d.src_bank == VALUE_BANK),
    "src_v": lambda d: d.src_bank == VALUE_BANK,
    "dst_kv": lambda d: (d.dst_bank == KEY_BANK) | (d.dst_bank == VALUE_BANK),
    "dst_v": lambda d: d.dst_bank == VALUE_BANK,
    "eng_i8": lambda d: d.engine == EngineKind.INT8,
}


@dataclass(frozen=True)
class Rule:
    """One opcode's row: ``checks(f)`` gives ``{ErrorCode: bad}`` (a
    condition on the facts ``f``), ``consts`` the constant entries copied
    before the pass ("n": one per output channel, "one": one per tensor,
    None: none), ``ends`` for END."""
    checks: object
    consts: str = None
    ends: bool = False


def rules(probs16, llm=False):
    """The check/issue table: ``{Opcode: Rule}``. ``probs16``: the build's
    probabilities are int16 (the int16 bank holds them) rather than int8.
    ``llm``: the decoder build (``Accelerator(llm=True)``): NORM takes head
    RMSNORM and refuses LAYERNORM (UNSUPPORTED; the other way round without
    it), and LINEAR takes the REQUANT_GATEMUL epilogue, which reads and
    writes its destination rows in the int16 bank as RESIDUAL does, and the
    REQUANT_ROPE epilogue (int8 out: an int8 bank or the KV region); a
    LINEAR with the ``uniform`` bit whose entry (``heads``) is not below
    ``max_width`` is refused with CONST (``entry_ok``)."""
    E = ErrorCode
    rows_bad = lambda f: ~f.src_rows_ok | ~f.dst_rows_ok               # noqa: E731
    probs_bank = (lambda f, s: f[f"{s}_res"]) if probs16 else (lambda f, s: f[f"{s}_i8"])
    attn_shape = lambda f: (f.heads_zero | f.k_zero | f.n_zero | ~f.hk_ok | ~f.hn_ok)  # noqa
    attn_overlap = lambda f: f.same_bank & f.src_lt_dst_end & f.dst_lt_src_end     # noqa
    norm_head = Head.RMSNORM if llm else Head.LAYERNORM
    # LINEAR epilogues that read their destination rows (read-modify-write).
    rmw = ((lambda f: f.epi_res | (f.d.epilogue == Epilogue.REQUANT_GATEMUL)) if llm else
           (lambda f: f.epi_res))

    def bad_epi(f):                     # a LINEAR epilogue this build does not run
        bad = (f.d.epilogue != Epilogue.REQUANT) & ~f.epi_res & ~f.epi_gelu
        return bad & (f.d.epilogue != Epilogue.REQUANT_GATEMUL) & ~rope(f) if llm else bad

    def rope(f):                        # REQUANT_ROPE (decoder builds): int8 out only
        return f.d.epilogue == Epilogue.REQUANT_ROPE

    def const_bad(f):                   # LINEAR: set (and a uniform pass's entry) out of range
        if not llm:
            return ~f.const_ok
        return ~f.const_ok | data.View(isa.LLM_FIELDS, f.d.reserved).uniform & ~f.entry_ok

    def bank_out(f):                    # a LINEAR destination bank of the wrong kind
        bad = ~(f.dst_i8 | f.dst_res | f.dst_kv & (f.d.epilogue == Epilogue.REQUANT))
        return Mux(rope(f), ~(f.dst_i8 | f.dst_kv), bad) if llm else bad
    return {
        Opcode.END: Rule(lambda f: {}, ends=True),
        Opcode.LOAD: Rule(lambda f: {
            E.BANK: ~(f.dst_i8 | f.dst_res | f.dst_kv), E.ROWS: ~f.dst_rows_ok,
            E.SHAPE: ~f.k_ok}),
        Opcode.STORE: Rule(lambda f: {
            E.BANK: ~(f.src_i8 | f.src_res | f.src_kv), E.ROWS: ~f.src_rows_ok,
            E.SHAPE: ~f.k_ok}),
        Opcode.LINEAR: Rule(lambda f: {
            E.UNSUPPORTED: (f.d.head != Head.NONE) | bad_epi(f),
            E.BANK: ~(f.src_i8 | f.src_res) |
                    Mux(rmw(f), ~f.dst_res, bank_out(f)),
            E.ROWS: rows_bad(f),
            E.SHAPE: ~f.k_ok | ~Mux(f.eng_i8, f.n_ok_i8, f.n_ok),
            E.CONST: const_bad(f),
            # Rows are written after they are read (row-stationary), so a
            # destination may start at or before its source; a RESIDUAL pass
            # (and REQUANT_GATEMUL) also reads its destination rows: those
            # must be disjoint.
            E.OVERLAP: f.same_bank & f.dst_lt_src_end &
                       Mux(rmw(f), f.src_lt_dst_end, f.dst_gt_src)}, consts="n"),
        Opcode.NORM: Rule(lambda f: {
            E.UNSUPPORTED: (f.d.head != norm_head) | (f.d.epilogue != Epilogue.REQUANT),
            E.BANK: ~f.src_res | ~(f.dst_i8 | f.dst_res),
            E.ROWS: rows_bad(f),
            E.SHAPE: ~f.k_ok | ~f.n_eq_k,
            E.CONST: ~f.const_ok}, consts="n"),
        # ATTN: keys (QK: N, AV: K) come from the KV region; the head dim
        # (QK: K, AV: N) is whole k-blocks / lane blocks of the int8 engine.
        Opcode.ATTN_QK: Rule(lambda f: {
            E.UNSUPPORTED: (f.d.head != Head.NONE) | ~f.eng_i8 |
                           (f.d.epilogue != Epilogue.REQUANT_SOFTMAX),
            E.BANK: ~f.src_i8 | ~probs_bank(f, "dst"),
            E.ROWS: rows_bad(f),
            E.SHAPE: attn_shape(f) | ~f.k_kpc | f.n_gt_rows,
            E.CONST: ~f.const_ok,
            E.OVERLAP: attn_overlap(f)}, consts="one"),
        Opcode.ATTN_AV: Rule(lambda f: {
            E.UNSUPPORTED: (f.d.head != Head.NONE) | ~f.eng_i8 |
                           (f.d.epilogue != Epilogue.REQUANT),
            E.BANK: ~probs_bank(f, "src") | ~(f.dst_i8 | f.dst_res),
            E.ROWS: rows_bad(f),
            E.SHAPE: attn_shape(f) | ~f.n_lanes8 | f.k_gt_rows,
            E.CONST: ~f.const_ok,
            E.OVERLAP: attn_overlap(f)}, consts="one"),
    }


class _Facts(dict):
    """Registered facts (attribute access), plus the descriptor ``d`` and
    the registered flags, for the :func:`rules` conditions."""
    __getattr__ = dict.__getitem__


def cfg_layout(*, k_blocks, n_blocks):
    """``cfg``: the descriptor, its flags and the per-pass values."""
    cnt = unsigned(isa.ROW_BITS + 1)
    return data.StructLayout({
        "desc": DESCRIPTOR,
        "flags": data.StructLayout({name: 1 for name in FLAGS}),
        "hk": unsigned(isa.ROW_BITS + 8), "hn": unsigned(isa.ROW_BITS + 8),
        "kb_count": range(k_blocks + 1), "nb_count": range(n_blocks + 1),
        "i8_nbs": cnt, "i8_kbs": cnt, "i8_hstep": cnt,
    })


#: One constant entry of the PARAM copy: ``index`` within the pass's set.
PARAM = data.StructLayout({"valid": 1, "first": 1, "last": 1,
                           "index": unsigned(isa.ROW_BITS), "data": unsigned(CONST_BITS)})


class Sequencer(wiring.Component):
    """See the module docstring. Parameters: the build's limits (``banks``,
    ``max_rows``, ``max_width``, ``prog_depth``, ``const_sets``,
    ``col_bits``), the TLMM engine's ``k_block`` and ``lanes``, the int8
    engine's ``attn_lanes`` / ``attn_kpc``, ``probs16`` and ``llm`` (see
    :func:`rules`)."""

    def __init__(self, *, banks, max_rows, max_width, prog_depth, const_sets, col_bits,
                 k_block, lanes, attn_lanes, attn_kpc, probs16, llm=False):
        self._p = dict(banks=banks, max_rows=max_rows, max_width=max_width,
                       prog_depth=prog_depth, const_sets=const_sets, col_bits=col_bits,
                       k_block=k_block, lanes=lanes, attn_lanes=attn_lanes,
                       attn_kpc=attn_kpc)
        self._rules, self._llm = rules(probs16, llm), llm
        self._k_blocks = -(-max_width // k_block)
        const_depth = const_sets << col_bits
        super().__init__({
            "start": In(1), "pass_done": In(1), "unit_err": In(1),
            **({"kv_off": In(isa.ROW_BITS)} if llm else {}),
            "prog_r": In(memory.ReadPort.Signature(addr_width=bits_for(prog_depth),
                                                   shape=unsigned(DESCRIPTOR_BITS))),
            "const_r": In(memory.ReadPort.Signature(addr_width=bits_for(const_depth),
                                                    shape=unsigned(CONST_BITS))),
            "cfg": Out(cfg_layout(k_blocks=self._k_blocks, n_blocks=max_width // lanes)),
            "go": Out(1), "run": Out(1), "issue": Out(1), "in_param": Out(1),
            "param": Out(PARAM),
            "busy": Out(1), "done": Out(1), "error": Out(1), "code": Out(ErrorCode),
            "pc": Out(range(prog_depth)),
            "clear": Out(1), "pass_end": Out(1), "pass_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        W, kb, lanes = p["max_width"], p["k_block"], p["lanes"]
        aL, aK = p["attn_lanes"], p["attn_kpc"]
        lbits, kbits = bits_for(aL), bits_for(aK)
        cfg = self.cfg
        d, fl = cfg.desc, cfg.flags

        # CHECK1: flags, sums, products, loop bounds.
        src_end, dst_end = Signal(isa.ROW_BITS + 1), Signal(isa.ROW_BITS + 1)
        k_pad = Signal(isa.ROW_BITS + 1)
        pcount = Signal(isa.ROW_BITS + 1)
        consts = {"n": d.n, "one": 1}
        check1 = [src_end.eq(d.src_row + d.rows), dst_end.eq(d.dst_row + d.rows),
                  k_pad.eq(d.k + kb - 1), cfg.hk.eq(d.heads * d.k), cfg.hn.eq(d.heads * d.n),
                  cfg.nb_count.eq(const_div(d.n, lanes, FIELD_MAX)),
                  cfg.i8_nbs.eq((d.n + aL - 1) >> lbits), cfg.i8_kbs.eq((d.k + aK - 1) >> kbits),
                  cfg.i8_hstep.eq(Mux(d.opcode == Opcode.ATTN_QK, d.k >> kbits, d.n >> lbits))]
        check1 += [fl[name].eq(fn(d)) for name, fn in FLAGS.items()]

        # CHECK2: facts, each a comparison against a limit or another field.
        def low_zero(v, bits):
            return v[:bits] == 0 if bits else Const(1)

        facts = {
            "k_ok": (d.k >= 1) & (d.k <= W),
            "n_ok": (d.n >= lanes) & (d.n <= W) & (cfg.nb_count * lanes == d.n),
            "n_ok_i8": (d.n >= aL) & (d.n <= W) & low_zero(d.n, lbits),
            "n_eq_k": d.n == d.k,
            "const_ok": d.const < p["const_sets"],
            "src_i8": d.src_bank < p["banks"], "dst_i8": d.dst_bank < p["banks"],
            "src_rows_ok": (d.rows >= 1) & (src_end <= p["max_rows"]),
            "dst_rows_ok": (d.rows >= 1) & (dst_end <= p["max_rows"]),
            "same_bank": d.src_bank == d.dst_bank,
            "dst_lt_src_end": d.dst_row < src_end, "src_lt_dst_end": d.src_row < dst_end,
            "dst_gt_src": d.dst_row > d.src_row,
            "heads_zero": d.heads == 0, "k_zero": d.k == 0, "n_zero": d.n == 0,
            "hk_ok": cfg.hk <= W, "hn_ok": cfg.hn <= W,
            "k_kpc": low_zero(d.k, kbits), "n_lanes8": low_zero(d.n, lbits),
            "k_gt_rows": d.k > p["max_rows"], "n_gt_rows": d.n > p["max_rows"],
        }
        if self._llm:                   # a uniform LINEAR's entry lies inside the set
            facts["entry_ok"] = d.heads < W
        f = _Facts({name: Signal(name=f"fact_{name}") for name in facts})
        check2 = [f[name].eq(v) for name, v in facts.items()]
        check2.append(cfg.kb_count.eq(const_div(k_pad, kb, FIELD_MAX + kb - 1)))
        f.update({"d": d, **{name: fl[name] for name in FLAGS}})

        # CHECK3: one bad bit per error code, from the opcode's row (selected
        # by the registered is_<opcode> flags); none known: OPCODE.
        codes = [c for c in ErrorCode if ErrorCode.NONE < c < ErrorCode.UNIT]
        bad = {c: Signal(name=f"bad_{c.name.lower()}") for c in codes}
        bad_next = {c: Const(0) for c in codes}
        known = Const(0)
        for op, rule in self._rules.items():
            is_op = fl[f"is_{op.name.lower()}"]
            known = known | is_op
            for code, cond in rule.checks(f).items():
                bad_next[code] = bad_next[code] | (is_op & cond)
        bad_next[ErrorCode.OPCODE] = ~known
        latch, kv_wrap = self._kv_moved(m)
        if kv_wrap is not None:
            bad_next[ErrorCode.ROWS] = bad_next[ErrorCode.ROWS] | kv_wrap
        check3 = [bad[c].eq(bad_next[c]) for c in codes]
        first_bad = Signal(ErrorCode)
        for c in reversed(codes):           # the lowest code wins
            with m.If(bad[c]):
                m.d.comb += first_bad.eq(c)

        # Table columns: END, and the constant entries each pass copies.
        ends = Cat(*(fl[f"is_{op.name.lower()}"] for op, r in self._rules.items()
                     if r.ends)).any()
        copies = Cat(*(fl[f"is_{op.name.lower()}"] for op, r in self._rules.items()
                       if r.consts)).any()
        pcount_next = Const(0, isa.ROW_BITS + 1)
        for op, rule in self._rules.items():
            if rule.consts:
                pcount_next = Mux(d.opcode == op, consts[rule.consts], pcount_next)
        check1.append(pcount.eq(pcount_next))

        m.d.comb += self.prog_r.addr.eq(self.pc)
        timer = self.pass_cycles            # cycles since DISPATCH
        pch = Signal(range(W + 1))
        p_issue = Signal()
        cb = p["col_bits"]
        set_bits = bits_for(p["const_sets"])
        set_part = [d.const[:set_bits]] if set_bits else []
        # The param stream: the entry read (CONST_READ_LATENCY) and registered
        # here (the constants fan out across the chip), its tags alongside.
        par = self.param
        lat = CONST_READ_LATENCY
        m.d.sync += [par.valid.eq(valid_delay(m, p_issue, lat, name="p_valid")),
                     par.last.eq(valid_delay(m, p_issue & (pch + 1 == pcount), lat,
                                             name="p_last")),
                     par.first.eq(valid_delay(m, p_issue & (pch == 0), lat, name="p_first")),
                     par.index.eq(delay(m, pch, lat, name="p_index")),
                     par.data.eq(self.const_r.data)]
        entry = pch[:cb]                # channel c reads entry c of the set ...
        if self._llm:                   # ... or a uniform LINEAR's one entry (``heads``)
            uniform = fl.is_linear & data.View(isa.LLM_FIELDS, d.reserved).uniform
            entry = Mux(uniform, d.heads, pch)[:cb]
        m.d.comb += [self.const_r.en.eq(self.in_param),
                     self.const_r.addr.eq(Cat(entry, *set_part))]

        def stop(code):
            m.d.sync += [self.error.eq(1), self.code.eq(code), self.busy.eq(0)]

        with m.FSM(name="seq") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.clear.eq(1)
                    m.d.sync += [self.pc.eq(0), self.busy.eq(1), self.done.eq(0),
                                 self.error.eq(0), self.code.eq(ErrorCode.NONE)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += latch
                m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.sync += check1
                m.d.sync += pch.eq(0)
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.sync += check2
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.d.sync += check3
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.sync += timer.eq(1)
                with m.If(first_bad != ErrorCode.NONE):
                    stop(first_bad)
                    m.next = "IDLE"
                with m.Elif(ends):
                    m.d.sync += [self.done.eq(1), self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(copies):
                    m.d.comb += self.issue.eq(1)
                    m.next = "PARAM"
                with m.Else():
                    m.d.comb += [self.issue.eq(1), self.go.eq(1)]
                    m.next = "RUN"
            with m.State("PARAM"):
                m.d.sync += timer.eq(timer + 1)
                m.d.comb += p_issue.eq(pch < pcount)
                with m.If(p_issue):
                    m.d.sync += pch.eq(pch + 1)
                with m.If(par.valid & par.last):
                    m.d.comb += self.go.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.run.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(self.unit_err):
                    stop(ErrorCode.UNIT)
                    m.next = "IDLE"
                with m.Elif(self.pass_done):
                    m.d.comb += self.pass_end.eq(1)
                    with m.If(self.pc == p["prog_depth"] - 1):
                        stop(ErrorCode.PC)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.pc.eq(self.pc + 1)
                        m.next = "FETCH"
        m.d.comb += self.in_param.eq(fsm.ongoing("PARAM"))
        return m

    def _kv_moved(self, m):
        """LATCH's statements (the fetched descriptor into ``cfg.desc``) and
        the registered ``kv_wrap`` bit: on a decoder build the fields the
        ``kv_pos`` register moves (module docstring), else the descriptor
        as read and None."""
        d = self.cfg.desc
        if not self._llm:
            return [d.eq(self.prog_r.data)], None
        raw = data.View(DESCRIPTOR, self.prog_r.data)
        moved = Signal(DESCRIPTOR, name="kv_moved")
        kv_wrap, wrap = Signal(), Const(0)
        in_kv = lambda bank: (bank == KEY_BANK) | (bank == VALUE_BANK)     # noqa: E731
        m.d.comb += moved.eq(raw)
        for name, when in (("kv_pos", Const(1)), ("src_row", in_kv(raw.src_bank)),
                           ("dst_row", in_kv(raw.dst_bank)),
                           ("n", raw.opcode == Opcode.ATTN_QK),
                           ("k", raw.opcode == Opcode.ATTN_AV)):
            total = Signal(isa.ROW_BITS + 1, name=f"kv_{name}")
            m.d.comb += total.eq(raw[name] + self.kv_off)
            with m.If(when):
                m.d.comb += moved[name].eq(total)
            wrap = wrap | when & total[isa.ROW_BITS]
        return [d.eq(moved), kv_wrap.eq(wrap)], kv_wrap
