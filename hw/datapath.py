"""The accelerator's pass datapath: memories -> readers -> engine ->
epilogue -> writers, and the AXI4-Stream ports.

Per pass (the sequencer's ``cfg`` flags; only the units a pass uses start,
on ``go``, and move while ``run``):

* LOAD: ``s_axis`` -> :class:`~trilut.hw.rowio.Unpacker` -> writer (int8
  bank or KV region; int16 bank);
* STORE: reader (int8 bank or KV region; int16 bank) ->
  :class:`~trilut.hw.rowio.Packer` -> ``m_axis`` (``tlast`` per row);
* LINEAR: source rows (the act reader; or the wide reader through DynQuant
  for rows of the int16 bank: per-token quantization) -> packer -> the TLMM
  or int8 engine, whose weights the :class:`~trilut.hw.wstore.WeightStore`
  replays (loaded from ``s_axis_wgt`` whenever a buffer is free; its play
  command issued with the pass) -> serializer -> accumulator register ->
  :class:`~trilut.hw.epilogue.Epilogue` -> writer;
* NORM: residual reader -> LayerNorm -> epilogue -> writer;
* ATTN_QK / ATTN_AV: act reader (or the wide reader: 16-bit
  probabilities) -> int8 engine, weights from the KV region
  (:class:`~trilut.hw.rowio.KVFetcher`) -> epilogue -> writer.

``go`` and ``run`` are registered on the way in (the units start and move
a cycle after the sequencer's); ``pass_done`` is a register, a cycle after
the writer's done, low from the sequencer's ``go`` until the units take it;
each route's condition is its own flip-flop (:func:`~trilut.hw.rowio.gated`).
The writers' memory ports are one register stage behind the writers.
``pass_done``: the pass's writer finished (STORE: its last row left
``m_axis``). ``unit_flags``: the units' sticky error flags in the order of
:data:`~trilut.hw.isa.UNIT_FLAGS`. ``events``: what the counters count.
Every internal stage honours backpressure; ``m_axis`` may stall
indefinitely; ``s_axis.tready`` and ``s_axis_wgt.tready`` never depend on
``tvalid``; ``s_axis_wgt.tready`` is low while ``in_reset``.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..golden.encoder import WIDE_BITS
from .arith import delay, valid_delay
from .dynquant import DynQuant
from .epilogue import ACC_BITS, Epilogue
from .isa import LLM_FIELDS
from .layernorm import LayerNorm
from .memories import BLOCKED_READ_LATENCY
from .queue import Queue
from .regfront import EVENTS, axi_stream_signature
from .rowio import (KVFetcher, Packer, Reader, Serializer, Unpacker, Writer, bits_for,
                    elem_stream, gated, join, join_fields, kv_address, stage)
from .sequencer import PARAM
from .wstore import WeightStore

__all__ = ["Datapath"]

_MEM_PORTS = ("act_r", "act_w", "res_r", "wide_r", "res_w", "kv_r", "kv_w")


class Datapath(wiring.Component):
    """See the module docstring. ``engine`` / ``int8``: the TLMM and int8
    engines (built by the top); ``mem_signature``: the
    :class:`~trilut.hw.memories.Memories` signature (its bank ports are taken
    flipped); ``cfg_shape``: the sequencer's ``cfg`` layout; ``p``: the
    top's parameters; ``wgt_bits`` / ``wstore_depth``: the weight store's."""

    def __init__(self, *, engine, int8, mem_signature, cfg_shape, p, row_bits, col_bits,
                 wgt_bits, wstore_depth):
        self._e, self._i8, self._p = engine, int8, p
        self._rb, self._cb = row_bits, col_bits
        self.epi = Epilogue(cfg_shape=cfg_shape, max_width=p["max_width"],
                            max_rows=p["max_rows"], gelu_mode=p["gelu_mode"],
                            probs_bits=p["probs_bits"],
                            gatemul=p["llm_act"] if p["llm"] else None,
                            rope=(p["llm_head_dim"], p["max_rows"]) if p["llm"] else None)
        self.ws = WeightStore(unsigned(wgt_bits), depth=wstore_depth, max_rows=p["max_rows"])
        axis = axi_stream_signature(8 * p["axis_bytes"])
        super().__init__({
            **{name: In(mem_signature.members[name].signature) for name in _MEM_PORTS},
            "cfg": In(cfg_shape), "go": In(1), "run": In(1), "issue": In(1),
            "param": In(PARAM), "busy": In(1), "in_param": In(1), "in_reset": In(1),
            "s_axis": In(axis), "s_axis_wgt": In(axis), "m_axis": Out(axis),
            "pass_done": Out(1), "unit_flags": Out(10),
            "events": Out(data.StructLayout({name: 1 for name in EVENTS})),
            **({"rope_w": Out(self.epi.rope_w.signature)} if p["llm"] else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p, e, i8, epi, ws = self._p, self._e, self._i8, self.epi, self.ws
        cb, rb = self._cb, self._rb
        W, ab = p["max_width"], p["axis_bytes"]
        aL, aK = i8.lanes, i8.k_per_cycle
        lbits = bits_for(aL)
        d, f = self.cfg.desc, self.cfg.flags
        # go and run registered: the units start and move one cycle after the
        # sequencer says so (its state decode stays off their paths).
        run, go = Signal(name="run_r"), Signal(name="go_r")
        m.d.sync += [run.eq(self.run), go.eq(self.go)]

        blk = max(e.k_block, aK)
        # The act reader's element is registered once more after its source
        # select (the KV region's byte select sits a chip's width of routing
        # from the blocks' output registers).
        act_rd = Reader(elem_bits=8, row_bits=rb, col_bits=cb, block=blk,
                        latency=BLOCKED_READ_LATENCY + 1)
        res_rd = Reader(elem_bits=16, row_bits=rb, col_bits=cb)
        # int16 rows as an engine's source: row-quantized (DynQuant, LINEAR)
        # or as they are (16-bit probabilities, ATTN_AV); second read port.
        wide_rd = Reader(elem_bits=16, row_bits=rb, col_bits=cb, block=blk)
        dynq = DynQuant(in_bits=WIDE_BITS, max_len=-(-W // blk) * blk)
        amax_q = Queue(width=WIDE_BITS, depth=8)
        act_wr = Writer(elem_bits=8, row_bits=rb, col_bits=cb)
        res_wr = Writer(elem_bits=16, row_bits=rb, col_bits=cb)
        act_pk = Packer(signed(8), e.k_block)
        st_pk8, st_pk16 = Packer(signed(8), ab), Packer(signed(16), ab // 2)
        ld_up8 = Unpacker(signed(8), ab, col_bits=cb)
        ld_up16 = Unpacker(signed(16), ab // 2, col_bits=cb)
        ser = Serializer(e.out.payload.shape(), e.lanes, e.acc_bits)
        i8_pk = Packer(signed(i8.act_bits), aK)
        i8_ser = Serializer(i8.out.payload.shape(), aL, i8.acc_bits)
        lnorm = LayerNorm(in_bits=16, max_len=W, rms=p["llm"])  # llm: the decoder's RMSNorm
        kvf = KVFetcher(beat_bits=8 * aL * aK, addr_bits=len(self.kv_r.addr), lanes=aL,
                        kpc=aK, row_bits=rb, col_bits=cb, llm=p["llm"],
                        read_latency=BLOCKED_READ_LATENCY)
        for name, unit in (("engine", e), ("wide_rd", wide_rd), ("dynq", dynq),
                           ("amax_q", amax_q), ("lnorm", lnorm), ("act_rd", act_rd),
                           ("res_rd", res_rd), ("act_wr", act_wr), ("res_wr", res_wr),
                           ("act_pk", act_pk), ("st_pk8", st_pk8), ("st_pk16", st_pk16),
                           ("ld_up8", ld_up8), ("ld_up16", ld_up16), ("ser", ser),
                           ("int8", i8), ("i8_pk", i8_pk), ("i8_ser", i8_ser), ("kvf", kvf),
                           ("wstore", ws), ("epilogue", epi)):
            m.submodules[name] = unit
        # The routes: each condition one flip-flop (rowio.gated), equal to
        # run_r & (its cfg flags).
        def when(cond, name):
            return gated(m, self.run, cond, name)

        compute = f.is_linear | f.is_norm | f.is_attn
        row_q = f.is_linear & f.src_res            # per-token quantized source
        li, at, nm = when(f.is_linear, "li"), when(f.is_attn, "at"), when(f.is_norm, "nm")
        ld, st = when(f.is_load, "ld"), when(f.is_store, "st")
        on_tlmm = when(f.is_linear & ~f.eng_i8, "on_tlmm")
        li_i8 = when(f.is_linear & f.eng_i8, "li_i8")
        on_i8 = when(f.is_linear & f.eng_i8 | f.is_attn, "on_i8")  # passes on the int8 engine

        # Memory addresses {bank, row, column}; the KV region's (word, byte).
        bank_bits = bits_for(p["banks"])

        def addr(row, col, bank=None):
            parts = ([col[:cb]] if cb else []) + [row[:rb]]
            if bank is not None and bank_bits:
                parts.append(bank[:bank_bits])
            return Cat(*parts)

        kv_geom = dict(lanes=aL, kpc=aK, row_bits=rb, col_bits=cb)
        wr_word, wr_byte = kv_address(f.dst_v, act_wr.row_addr, act_wr.col_addr, **kv_geom)
        rd_word, rd_byte = kv_address(f.src_v, act_rd.row_addr, act_rd.col_addr, **kv_geom)
        # The readers see their memory's data through an output register
        # (read latency 2): block RAM clock-to-out is ~5.6 ns on ECP5. The
        # int16 bank's ports have theirs per block, the KV region's beside
        # its block RAMs (Memories).
        rd_byte_d = delay(m, rd_byte, BLOCKED_READ_LATENCY, name="rd_byte")
        act_q = Signal.like(self.act_r.data, name="act_q", reset_less=True)
        m.d.sync += act_q.eq(self.act_r.data)
        # The writers' ports into the banks and the KV region are a register
        # stage behind them (their data comes through the epilogue's output
        # select): a row is in memory a cycle after its writer's done, long
        # before the sequencer's next pass can read it.
        w_data = delay(m, act_wr.wdata, 1, name="act_w_data")
        m.d.comb += [
            self.act_r.addr.eq(addr(act_rd.row_addr, act_rd.col_addr, d.src_bank)),
            self.res_r.addr.eq(addr(res_rd.row_addr, res_rd.col_addr)),
            self.wide_r.addr.eq(addr(wide_rd.row_addr, wide_rd.col_addr)),
            self.act_w.addr.eq(delay(m, addr(act_wr.row_addr, act_wr.col_addr, d.dst_bank), 1,
                                     name="act_w_addr")),
            self.act_w.data.eq(w_data), self.act_w.en.eq(
                valid_delay(m, act_wr.we & ~f.dst_kv, 1, name="act_w_en")),
            self.res_w.addr.eq(delay(m, addr(res_wr.row_addr, res_wr.col_addr), 1,
                                     name="res_w_addr")),
            self.res_w.data.eq(delay(m, res_wr.wdata, 1, name="res_w_data")),
            self.res_w.en.eq(valid_delay(m, res_wr.we, 1, name="res_w_en")),
            self.kv_w.addr.eq(delay(m, wr_word, 1, name="kv_w_addr")),
            self.kv_w.data.eq(w_data.as_unsigned().replicate(aL * aK)),
            self.kv_w.en.eq(valid_delay(m, Mux(act_wr.we & f.dst_kv, 1 << wr_byte, 0), 1,
                                        name="kv_w_en")),
            self.kv_r.addr.eq(Mux(f.is_attn, kvf.addr, rd_word)), kvf.rdata.eq(self.kv_r.data),
            act_rd.rdata.eq(delay(m, Mux(f.src_kv, self.kv_r.data.word_select(rd_byte_d, 8),
                                         act_q), 1, name="act_rdata")),
            res_rd.rdata.eq(self.res_r.data), wide_rd.rdata.eq(self.wide_r.data),
        ]

        # Unit configuration; only the units a pass uses start (a reader
        # left running would fill its FIFO with rows nobody takes).
        m.d.comb += [
            act_rd.go.eq(go & ~f.src_res & (f.is_linear | f.is_store | f.is_attn)),
            wide_rd.go.eq(go & f.src_res & (f.is_linear | f.is_attn)),
            res_rd.go.eq(go & (f.is_linear & epi.reads_dst(self.cfg) | f.is_store & f.src_res |
                               f.is_norm)),
            act_wr.go.eq(go & ~f.dst_res & (compute | f.is_load)),
            res_wr.go.eq(go & f.dst_res & (compute | f.is_load)),
            kvf.go.eq(go & f.is_attn),
            ld_up8.go.eq(go & f.is_load & ~f.dst_res), ld_up16.go.eq(go & f.is_load & f.dst_res),
        ]
        # The engines' source readers are configured alike (the wide reader
        # only runs for LINEAR and ATTN: always padded), and so are the writers.
        for rd, pad in ((act_rd, f.is_linear | f.is_attn), (wide_rd, 1)):
            m.d.comb += [
                rd.base.eq(d.src_row), rd.rows.eq(d.rows), rd.length.eq(d.k),
                rd.pad.eq(pad), rd.segs.eq(Mux(f.is_attn, d.heads, 1)),
                rd.blk_last.eq(Mux(f.is_attn | f.eng_i8, aK - 1, e.k_block - 1)),
            ]
        m.d.comb += [res_rd.base.eq(Mux(f.is_linear, d.dst_row, d.src_row)),
                     res_rd.rows.eq(d.rows), res_rd.length.eq(Mux(f.is_linear, d.n, d.k))]
        for wr in (act_wr, res_wr):
            m.d.comb += [wr.base.eq(d.dst_row), wr.rows.eq(d.rows),
                         wr.length.eq(Mux(f.is_attn, self.cfg.hn, Mux(f.is_linear, d.n, d.k)))]
        m.d.comb += [
            ld_up8.length.eq(d.k), ld_up16.length.eq(d.k),
            ld_up8.rows.eq(d.rows), ld_up16.rows.eq(d.rows),
            kvf.qk.eq(f.is_attn_qk), kvf.rows.eq(d.rows), kvf.heads.eq(d.heads),
            kvf.nbs.eq(self.cfg.i8_nbs), kvf.kbs.eq(self.cfg.i8_kbs),
            kvf.hstep.eq(self.cfg.i8_hstep),
            i8_ser.keep.eq(Mux(d.n[:lbits] == 0, aL, d.n[:lbits]) if lbits else 1),
        ]

        # LOAD: s_axis -> unpacker -> writer.
        axis_in, axis_out = self.s_axis, self.m_axis
        ld8, ld16 = when(f.is_load & ~f.dst_res, "ld8"), when(f.is_load & f.dst_res, "ld16")
        for up, on in ((ld_up8, ld8), (ld_up16, ld16)):
            with m.If(on):
                m.d.comb += [up.inp.valid.eq(axis_in.tvalid), axis_in.tready.eq(up.inp.ready)]
            m.d.comb += up.inp.payload.data.eq(axis_in.tdata)
        join(m, ld_up8.out, act_wr.inp, ld8)
        join(m, ld_up16.out, res_wr.inp, ld16)

        # STORE: reader -> packer -> m_axis.
        st8, st16 = when(f.is_store & ~f.src_res, "st8"), when(f.is_store & f.src_res, "st16")
        join(m, act_rd.out, st_pk8.inp, st8)
        join(m, res_rd.out, st_pk16.inp, st16)
        stored = Signal.like(d.rows)
        for pk, on in ((st_pk8, st8), (st_pk16, st16)):
            with m.If(on):
                m.d.comb += [axis_out.tvalid.eq(pk.out.valid), pk.out.ready.eq(axis_out.tready),
                             axis_out.tdata.eq(pk.out.payload.data),
                             axis_out.tlast.eq(pk.out.payload.last)]
        with m.If(axis_out.tvalid & axis_out.tready & axis_out.tlast):
            m.d.sync += stored.eq(stored + 1)
        with m.If(go):
            m.d.sync += stored.eq(0)

        # Sources: the act reader (int8 bank, KV region) or the wide reader
        # (int16 bank): through DynQuant for a LINEAR (the row's absmax into
        # amax_q with its last element), as they are for ATTN_AV. Then the
        # packer of the pass's engine: k-blocks for TLMM, attn_kpc for INT8.
        a_src = elem_stream().create(path=("a_src",))
        join(m, act_rd.out, a_src, when((f.is_linear | f.is_attn) & ~f.src_res, "src_act"))
        join(m, wide_rd.out, a_src, when(f.is_attn & f.src_res, "src_wide"))
        join_fields(m, wide_rd.out, dynq.inp, when(row_q, "src_q"), only_source=True)
        with m.If(row_q):
            m.d.comb += [a_src.valid.eq(dynq.out.valid & amax_q.w_rdy),
                         dynq.out.ready.eq(a_src.ready & amax_q.w_rdy),
                         a_src.payload.data.eq(dynq.out.payload.data),
                         a_src.payload.last.eq(dynq.out.payload.last)]
        m.d.comb += [amax_q.w_data.eq(dynq.out.payload.absmax),
                     amax_q.w_en.eq(row_q & dynq.out.valid & dynq.out.ready &
                                    dynq.out.payload.last)]
        join_fields(m, a_src, act_pk.inp, on_tlmm)
        join_fields(m, a_src, i8_pk.inp, on_i8)
        join(m, act_pk.out, e.act, on_tlmm)
        join(m, i8_pk.out, i8.act, on_i8)

        # Weights: s_axis_wgt -> weight store (loaded whenever a buffer is
        # free, also during other passes; its output queue keeps the
        # engines' ready out of its replay pipeline) -> the pass's engine. The play command {k-blocks, output blocks, M} is issued
        # with a LINEAR (held in play_v until taken). ATTN: the KV fetcher.
        wgt_in = self.s_axis_wgt
        play_v, wgt_take = Signal(), Signal()
        m.d.comb += [
            ws.load.valid.eq(wgt_in.tvalid & ~self.in_reset),
            wgt_in.tready.eq(ws.load.ready & ~self.in_reset),
            ws.load.payload.codes.eq(wgt_in.tdata[:ws.code_bits]),
            ws.load.payload.last.eq(wgt_in.tlast),
            ws.play.valid.eq(play_v),
            ws.play.payload.k_blocks.eq(Mux(f.eng_i8, self.cfg.i8_kbs, self.cfg.kb_count)),
            ws.play.payload.n_blocks.eq(Mux(f.eng_i8, self.cfg.i8_nbs, self.cfg.nb_count)),
            ws.play.payload.rows.eq(d.rows), ws.play.payload.cont.eq(0),
            wgt_take.eq(Mux(f.eng_i8, i8.wgt.valid & i8.wgt.ready, e.wgt.valid & e.wgt.ready)),
        ]
        with m.If(ws.play.ready):
            m.d.sync += play_v.eq(0)
        with m.If(self.issue & f.is_linear):
            m.d.sync += play_v.eq(1)
        w_codes = ws.wgt.payload.codes
        w_last_k, w_last_n = ws.wgt.payload.last_k, ws.wgt.payload.last_n
        m.d.comb += [
            e.wgt.payload.codes.as_value().eq(w_codes),
            e.wgt.payload.last_k.eq(w_last_k), e.wgt.payload.last_n.eq(w_last_n),
        ]
        with m.If(on_tlmm):
            m.d.comb += [e.wgt.valid.eq(ws.wgt.valid), ws.wgt.ready.eq(e.wgt.ready)]
        with m.If(li_i8):
            i8_bits = i8.wgt.payload.shape()["data"].shape.size
            m.d.comb += [i8.wgt.valid.eq(ws.wgt.valid), ws.wgt.ready.eq(i8.wgt.ready),
                         i8.wgt.payload.data.as_value().eq(w_codes[:i8_bits]),
                         i8.wgt.payload.last_k.eq(w_last_k),
                         i8.wgt.payload.last_n.eq(w_last_n)]
        join(m, kvf.out, i8.wgt, at)    # same bits: data (lane-major bytes), last_k, last_n

        # Accumulators (int32): an engine's results through its serializer,
        # or LayerNorm's z; registered (the source select must not run on
        # into RowScale's multipliers), with the row's absmax (amax_q, popped
        # with the row's last result) for a row-quantized LINEAR, else 1.
        join(m, e.out, ser.inp, on_tlmm)
        join(m, i8.out, i8_ser.inp, on_i8)
        acc = elem_stream(ACC_BITS).create(path=("acc",))
        join_fields(m, ser.out, acc, on_tlmm)
        join_fields(m, i8_ser.out, acc, on_i8)
        join_fields(m, res_rd.out, lnorm.inp, nm, only_source=True)
        join_fields(m, lnorm.out, acc, nm)
        acc_r = stage(m, acc, acc.payload.data, "acc_r", ACC_BITS)
        amax_ok = ~row_q | amax_q.r_rdy
        m.d.comb += [epi.acc.valid.eq(acc_r.valid & amax_ok),
                     acc_r.ready.eq(epi.acc.ready & amax_ok),
                     epi.acc.payload.data.eq(acc_r.payload.data),
                     epi.acc.payload.last.eq(acc_r.payload.last),
                     epi.acc.payload.absmax.eq(Mux(row_q, amax_q.r_data, 1)),
                     amax_q.r_en.eq(row_q & acc_r.valid & acc_r.ready & acc_r.payload.last)]

        # Epilogue (residual rows from the residual reader) -> the writers.
        m.d.comb += [epi.cfg.eq(self.cfg), epi.run.eq(self.run), epi.go.eq(go),
                     epi.param.eq(self.param)]
        if p["llm"]:                    # the RoPE table window (hw/llm_rope.py); GQA
            wiring.connect(m, wiring.flipped(self.rope_w), epi.rope_w)
            llm_attn = data.View(LLM_FIELDS, d.reserved)
            m.d.comb += [kvf.group.eq(llm_attn.kv_group), kvf.base.eq(llm_attn.kv_base)]
        join(m, res_rd.out, epi.res, when(f.is_linear & epi.reads_dst(self.cfg), "epi_res"))
        join(m, epi.out, act_wr.inp, when(compute & ~f.dst_res, "epi_w8"))
        join(m, epi.out, res_wr.inp, when(compute & f.dst_res, "epi_w16"))

        # Status: pass end, unit flags (isa.UNIT_FLAGS order), counter events.
        # pass_done is a register (the writers' done flags and the pass's
        # flags stay off the sequencer's state logic); it is held low from
        # the sequencer's go until the units have taken it (go_r), so that
        # the previous pass's done flags never end the new one.
        m.d.sync += self.pass_done.eq(
            (((f.is_load | compute) & Mux(f.dst_res, res_wr.done, act_wr.done)) |
             (f.is_store & (stored == d.rows))) & ~go & ~self.go)
        m.d.comb += [
            self.unit_flags.eq(Cat(e.error, epi.error.requant, epi.error.resadd, lnorm.error,
                                   epi.error.gelu, epi.error.gelu_rq, i8.error, epi.error.smax,
                                   ws.overflow, ws.mismatch)),
        ]
        ax_in = axis_in.tvalid & axis_in.tready
        ax_out = axis_out.tvalid & axis_out.tready
        epi_w = Mux(f.epi_res, res_wr.we, act_wr.we)
        i8_take = i8.wgt.valid & i8.wgt.ready
        wgt_in_take = wgt_in.tvalid & wgt_in.tready
        ev = self.events
        m.d.comb += [
            ev.cycles.eq(self.busy),
            ev.load_busy.eq(ld & ax_in), ev.load_stall.eq(ld & ~ax_in),
            ev.engine_busy.eq(li & wgt_take), ev.engine_stall.eq(li & ~wgt_take),
            ev.epilogue_busy.eq(li & epi_w), ev.epilogue_stall.eq(li & ~epi_w),
            ev.int8_busy.eq(at & i8_take), ev.int8_stall.eq(at & ~i8_take),
            ev.store_busy.eq(st & ax_out), ev.store_stall.eq(st & ~ax_out),
            ev.wgt_load.eq(self.busy & wgt_in_take),
            ev.wgt_overlap.eq((run | self.in_param) & compute & wgt_in_take),
            ev.wgt_wait.eq(li & Mux(f.eng_i8, i8.wgt.ready, e.wgt.ready) & ~ws.wgt.valid),
        ]
        return m
