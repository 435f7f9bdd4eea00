# amaranth: UnusedElaboratable=no
# (its LayerNorm and requantizer path are created in __init__, for their latencies;
# they are elaborated as our submodules, and if we are never elaborated
# Amaranth warns about the outer component already)
"""Streaming integer RMSNorm of the decoder, bit-exact with golden
:func:`trilut.golden.llm.int_rmsnorm` followed by the norm output stage
(:func:`trilut.golden.encoder._norm` with ``NormParams(out_bits=16,
signed_out=True, bias=0)``, golden/llm.py)::

    std = max(isqrt(sum x^2), 1);  z = (x * ((2^31 - 1) // std)) >> 1
    y_c = sign_c * clamp(((z * m_c + 2^(e_c - 1)) >> e_c), -32767, 32767)

The parts are the encoder's: :class:`~trilut.hw.layernorm.LayerNorm` in its
``rms`` mode (row buffers, ``sum x^2`` on a DSP, :class:`SeqIsqrt` and the
reciprocal :class:`SeqDivider`), the requantizer's datapath and per-channel
table (:mod:`trilut.hw.requant`), and a one-bit per-channel sign table read
by the same channel counter (the sign is applied after the requantizer: its
rounding is not odd-symmetric, so it cannot be folded into m).

Constants: ``param`` stream ``{"m", "e", "sign", "last"}`` (sign 1 = gamma
negative), one beat per channel from channel 0, ``last`` on the final one;
``num_channels`` (the row length C, held stable while rows are in flight).
Write the table while no row is in flight; a beat past ``max_len`` entries
is dropped and sets ``error``. :meth:`param_beats` packs golden's NormParams
arrays.
"""
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.quant import INT16_MAX, M_BITS_DEFAULT
from .arith import delay
from .layernorm import IN_BITS_RANGE, OUT_BITS as Z_BITS, LayerNorm
from .queue import CREDIT_RETURN, OutputQueue
from .requant import E_FIELD, M_BITS_MAX, _ChannelTable, _RequantPath

__all__ = ["RMSNorm", "MAX_CHANNELS"]

MAX_CHANNELS = 4096            # per-channel table limit of the requantizer
OUT_BITS = 16                  # int16 output, clamped to +-32767 (a sign flip cannot overflow)


class RMSNorm(wiring.Component):
    """Streaming RMSNorm with the per-channel gamma requantizer and sign (module docstring).

    Parameters: ``in_bits`` input width (16: the int16 residual stream; 2..16
    accepted); ``max_len`` largest row length C (2 .. 4096, the size of the
    gamma table); ``m_bits`` width of the per-channel multiplier (default 16).

    Ports: ``inp`` ``{"data": signed(in_bits), "last": 1}``, ``out``
    ``{"data": signed(16), "last": 1}``, one element per beat, ``last`` on a
    row's final element; ``param``/``num_channels`` (module docstring);
    ``error`` sticky (a row longer than ``max_len``: handled as LayerNorm
    does; or a gamma table overflow), cleared by reset.

    Handshake: honours backpressure on ``out``; ``inp.ready`` depends on
    registers only. Throughput: one element per cycle for rows of C >=
    :attr:`min_full_rate_len` (LayerNorm's row_interval; shorter rows at one
    row per ``std_cycles``). Latency: :meth:`latency` cycles from a row's last
    element accepted to its first result valid (idle unit, no backpressure).
    DSP: 3 (LayerNorm) + 2 (requantizer) MULT18X18D.

    Tested (Verilator, against golden): in_bits 16 with max_len 64,
    rows of C = 1, 2, 3, odd, max_len and over-long; full-range random rows,
    all -32768, all 32767, all zero, constant, one-hot, alternating extremes;
    m over [0, 2^16), e over [1, 62] including saturation at both clamps, and
    both signs.
    """

    def __init__(self, in_bits=16, max_len=768, m_bits=M_BITS_DEFAULT):
        check_int("in_bits", in_bits, *IN_BITS_RANGE)
        check_int("max_len", max_len, 2, MAX_CHANNELS)
        check_int("m_bits", m_bits, 1, M_BITS_MAX)
        self._norm = LayerNorm(in_bits=in_bits, max_len=max_len, rms=True)
        self._path = _RequantPath(lanes=1, acc_bits=Z_BITS, m_bits=m_bits, out_bits=OUT_BITS,
                                  bias_bits=1, channels=max_len)
        self._sign = _ChannelTable({"sign": unsigned(1)}, channels=max_len, lanes=1)
        self._in_bits, self._max_len, self._m_bits = in_bits, max_len, m_bits
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({"data": signed(in_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({"data": signed(OUT_BITS),
                                                           "last": 1}))),
            "param": In(stream.Signature(data.StructLayout(
                {"m": unsigned(m_bits), "e": E_FIELD, "sign": 1, "last": 1}))),
            "num_channels": In(range(max_len + 1)),
            "error": Out(1),
        })

    in_bits = property(lambda self: self._in_bits)
    max_len = property(lambda self: self._max_len, doc="largest row length C (table size)")
    m_bits = property(lambda self: self._m_bits)
    out_bits = property(lambda self: OUT_BITS)
    norm = property(lambda self: self._norm, doc="the LayerNorm (rms mode) inside")
    tail_latency = property(lambda self: self._path.latency + 1,
                            doc="cycles from z accepted to y entering the output FIFO")

    @property
    def min_full_rate_len(self):
        """Shortest row length C that streams at one element per cycle."""
        return next(c for c in range(1, self._max_len + 1) if self._norm.row_interval(c) == c)

    def latency(self):
        """LayerNorm's latency, the requantizer and sign stage, and the
        buffered output FIFO (2: write, then its output register)."""
        return self._norm.latency() + self.tail_latency + 2

    def param_beats(self, m, e, sign):
        """``param`` payloads for per-channel m, e and sign (+1/-1, golden NormParams.sign)."""
        s = np.asarray(sign).reshape(-1)
        if s.dtype.kind not in "iu" or not np.isin(s, (-1, 1)).all():
            raise ValueError("sign must hold integers +1 or -1")
        beats = self._path.param_beats(m, e, np.zeros(len(s), np.int64))
        if len(beats) != len(s):
            raise ValueError(f"m, e and sign must have one length, got {len(beats)} and {len(s)}")
        return [{"m": b["m"], "e": b["e"], "sign": int(v < 0), "last": b["last"]}
                for b, v in zip(beats, s)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.norm = norm = self._norm
        p = self._path

        # The two tables read the same param beats (their own write counters).
        rq_param = stream.Signature(data.StructLayout(
            {"m": unsigned(self._m_bits), "e": E_FIELD, "bias": signed(1), "last": 1})).create()
        sg_param = stream.Signature(data.StructLayout({"sign": 1, "last": 1})).create()
        pl = self.param.payload
        m.d.comb += [rq_param.valid.eq(self.param.valid), sg_param.valid.eq(self.param.valid),
                     rq_param.payload.m.eq(pl.m), rq_param.payload.e.eq(pl.e),
                     rq_param.payload.last.eq(pl.last), sg_param.payload.sign.eq(pl.sign),
                     sg_param.payload.last.eq(pl.last), self.param.ready.eq(1)]
        rq_owner = SimpleNamespace(param=rq_param, num_channels=self.num_channels)
        sg_owner = SimpleNamespace(param=sg_param, num_channels=self.num_channels)

        oq = OutputQueue(m, self.out, depth=self.tail_latency + CREDIT_RETURN)
        advance = oq.issue
        m.d.comb += [norm.out.ready.eq(oq.room), advance.eq(norm.out.valid & oq.room)]
        z, z_last = norm.out.payload.data, norm.out.payload.last
        valid, (y,), last, overflow = p.elaborate(m, rq_owner, advance, [z], z_last)
        (sg,), _ = self._sign.elaborate(m, sg_owner, advance, z_last, name="sg")
        neg = delay(m, sg["sign"], p.latency - self._sign.latency, name="sg_neg")

        yc = Mux(y < -INT16_MAX, -INT16_MAX, y)            # the int16 clamp is +-32767
        yo = Signal(signed(OUT_BITS))
        vo, lo = Signal(), Signal()
        m.d.sync += [yo.eq(Mux(neg, -yc, yc)), vo.eq(valid), lo.eq(last)]

        error = Signal()
        with m.If(overflow | norm.error):
            m.d.sync += error.eq(1)
        m.d.comb += [
            self.error.eq(error),
            norm.inp.valid.eq(self.inp.valid), norm.inp.payload.eq(self.inp.payload),
            self.inp.ready.eq(norm.inp.ready),
        ]
        oq.push(vo, data=yo, last=lo)
        return m
