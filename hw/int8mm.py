"""int8 x int8 matrix-vector engine on the multiplier blocks (SPEC section 5):
attention QK^T and AV, and int8-weight linear layers.

``y[n] = sum_k a[k] * w[k, n]`` for signed ``act_bits``-bit activations and
signed ``wgt_bits``-bit weights (8 and 8 by default), ``lanes`` outputs in
parallel, ``k_per_cycle`` products per lane per cycle, each product one
signed multiply that Yosys maps to a MULT18X18D (operands up to 18 bits).
An optional built-in requantizer (the datapath of
:class:`~trilut.hw.requant.Requantizer`, shared code) turns each lane's
accumulator into an int8 (or int16) output.

Streams and stream control are the ternary engines' (:mod:`trilut.hw.matmul`),
from one base class, :class:`~trilut.hw.rowengine.RowEngine`:
one activation row of K <= ``max_k`` elements, ``KB = ceil(K / k_per_cycle)``
k-blocks, ``NB = N / lanes`` output blocks:

* ``act``: KB beats, ``data`` holds ``k_per_cycle`` activations (zero-padded
  past K), ``last`` on the final beat.
* ``wgt``: NB * KB beats, output block outer, k-block inner; ``data`` holds
  ``w[kb*KPC:(kb+1)*KPC, nb*L:(nb+1)*L]`` lane-major (lane l's
  ``k_per_cycle`` weights first), ``last_k`` on kb == KB-1, ``last_n`` also
  on the row's final beat. (matmul's field is ``codes``; here the weights
  themselves, signed, in ``data``.)
* ``out``: NB beats, ``data[l] = y[nb*lanes + l]`` (the ``acc_bits``
  accumulator, or the requantized value), ``last`` on the final.

Row store: double-buffered like the ternary engines (the next row's ``act``
beats are taken while the current row computes; weights run at one beat per
cycle). ``error``: sticky (cleared by reset) on a row longer than ``max_k``
(cut at ``max_k``), an output block with the wrong number of k-blocks, or a
requantizer param table overflow.

Requantizer constants (``requant=True``): as :class:`Requantizer` with
``lanes`` = this engine's lanes; per-channel tables index the output
channel n (``channels`` a multiple of ``lanes``; ``num_channels`` = N or a
divisor of it), reset at each row's ``last``.

Handshake: honours backpressure on ``out`` (results wait in a FIFO; ``wgt``
stalls while it could overflow); ``act.ready`` and ``wgt.ready`` never
depend combinationally on ``out.ready``.
"""
import numpy as np
from amaranth.hdl import Signal, signed
from amaranth.lib import data

from ..golden.checks import check_int
from ..golden.quant import M_BITS_DEFAULT, requantize
from .arith import adder_tree, delay, valid_delay
from .requant import _RequantPath
from .rowengine import Results, RowEngine, accumulate

__all__ = ["Int8Engine"]

# Registers after each multiplier (the MULT18X18D is combinational here:
# Yosys packs no registers into it). A third one did not help nextpnr place
# the first next to the multiplier (80 MHz instead of 80-93 MHz).
_PRODUCT_REGS = 2


class Int8Engine(RowEngine):
    """int8 x int8 dot-product engine (see the module docstring).

    Parameters: ``lanes`` L outputs per beat; ``k_per_cycle`` products per
    lane per cycle; ``max_k`` largest row length (rounded up to whole
    k-blocks; sets the row store depth and the accumulator width);
    ``act_bits``/``wgt_bits`` operand widths (2..18, one MULT18X18D per
    product); ``requant`` adds the requantizer, with ``out_bits`` (8 or 16),
    ``m_bits``, ``bias_bits`` and ``channels`` as in :class:`Requantizer`;
    ``act_fanout`` lanes fed by one activation register (default 2; lane
    group g runs g cycles late, which keeps each register next to its
    multipliers: at lanes = k_per_cycle = 8 on ECP5-85F, nextpnr seed 1,
    fanout 8/4/2/1 gave 98/101/103/104 MHz for 5.3k/5.4k/6.2k/7.9k FFs;
    the multipliers are combinational, so Fmax hangs on where nextpnr puts
    the registers around them).

    Peak ``lanes * k_per_cycle`` MACs per cycle (one ``wgt`` beat per
    cycle; measured 97-98% of peak over 600 beats, fill and drain
    included). Latency: :attr:`latency` cycles from a block's final ``wgt``
    beat to its result entering the output FIFO (+1-2 for the FIFO; 11 at
    lanes = k_per_cycle = 8, 19 with the requantizer).
    Accumulator ``acc_bits`` = the smallest signed width holding
    ``max_k * 2**(act_bits-1) * 2**(wgt_bits-1)``.
    DSP: :attr:`mult18` MULT18X18D. Row store: one memory of
    ``2 * 2**ceil(log2(k_blocks))`` beats of ``k_per_cycle * act_bits`` bits.
    Tested: operands over the full int8 range incl. -128 everywhere and
    +127, K from 1 to max_k, lanes 2-4, k_per_cycle 2-8, act_fanout 1 and 2,
    with and without the requantizer (scalar and per-channel constants).
    """

    def __init__(self, *, lanes=8, k_per_cycle=8, max_k=None, act_bits=8, wgt_bits=8,
                 requant=False, out_bits=8, m_bits=M_BITS_DEFAULT, bias_bits=32,
                 channels=1, act_fanout=None):
        check_int("lanes", lanes, 1, 256)
        check_int("k_per_cycle", k_per_cycle, 1, 256)
        check_int("act_bits", act_bits, 2, 18)
        check_int("wgt_bits", wgt_bits, 2, 18)
        self._set_rows(lanes=lanes, k_block=k_per_cycle, max_k=max_k, act_bits=act_bits)
        if act_fanout is not None:
            check_int("act_fanout", act_fanout, 1, lanes)
        if not isinstance(requant, bool):
            raise TypeError(f"requant must be a bool, not {requant!r}")
        self._kpc, self._wgt_bits = k_per_cycle, wgt_bits
        acc_bits = (self._max_k << (act_bits + wgt_bits - 2)).bit_length() + 1
        # Store read, operand register, product registers, adder tree (one
        # register per level), skew of the lane groups, total register.
        self._act_fanout = min(2, lanes) if act_fanout is None else act_fanout
        self._skew = -(-lanes // self._act_fanout) - 1
        self._base_latency = 2 + _PRODUCT_REGS + (k_per_cycle - 1).bit_length()
        self._lane_latency = self._base_latency + self._skew + 1
        self._rq = (_RequantPath(lanes=lanes, acc_bits=acc_bits, m_bits=m_bits,
                                 out_bits=out_bits, bias_bits=bias_bits, channels=channels)
                    if requant else None)
        if not requant:
            for name, value, default in (("out_bits", out_bits, 8), ("m_bits", m_bits,
                                         M_BITS_DEFAULT), ("bias_bits", bias_bits, 32),
                                         ("channels", channels, 1)):
                if value != default:
                    raise ValueError(f"{name} only applies with requant=True")
        super().__init__(acc_bits=acc_bits, wgt_field="data", wgt_shape=signed(wgt_bits),
                         wgt_per_lane=k_per_cycle,
                         out_bits=self._rq.out_bits if requant else acc_bits,
                         members=self._rq.table.members() if requant else None)

    k_per_cycle = property(lambda self: self._kpc, doc="products per lane per cycle")
    wgt_bits = property(lambda self: self._wgt_bits)
    macs_per_cycle = property(lambda self: self._lanes * self._kpc, doc="peak MACs per cycle")
    act_fanout = property(lambda self: self._act_fanout,
                          doc="lanes sharing one activation register")
    requant = property(lambda self: self._rq is not None)
    out_bits = property(lambda self: self._rq.out_bits if self._rq else self._acc_bits,
                        doc="width of out.data elements")
    m_bits = property(lambda self: self._rq.m_bits if self._rq else None)
    bias_bits = property(lambda self: self._rq.bias_bits if self._rq else None)
    channels = property(lambda self: self._rq.channels if self._rq else None)

    @property
    def latency(self):
        """Cycles from a block's final ``wgt`` beat to the output FIFO write."""
        return self._lane_latency + (self._rq.latency if self._rq else 0)

    @property
    def mult18(self):
        """MULT18X18D blocks: one per product, plus the requantizer's."""
        return self._lanes * self._kpc + (self._rq.mult18 if self._rq else 0)

    def cycles(self, rows, k, n):
        """Analytic cycles for ``rows`` rows at full rate, first weight beat
        to last result (the first row's store is assumed filled)."""
        return rows * (n // self._lanes) * -(-k // self._kpc) + self.latency + 2

    # --- host-side helpers ------------------------------------------------

    def _weight_words(self, w):
        w = np.asarray(w, dtype=np.int64)
        self._check_range("weights", w, self._wgt_bits)
        return w

    def param_beats(self, m, e, bias):
        """Requantizer ``param`` stream payloads (per-channel arrays)."""
        if self._rq is None:
            raise ValueError("this engine has no requantizer (requant=False)")
        return self._rq.param_beats(m, e, bias)

    def model(self, a, w, m=None, e=None, bias=None):
        """Golden result for rows ``a`` (M, K) against ``w`` (K, N): the exact
        int64 product, requantized with golden ``requantize`` when the engine
        has a requantizer (``m``/``e``/``bias`` scalars or per-channel arrays
        of length N)."""
        y = np.asarray(a, dtype=np.int64) @ np.asarray(w, dtype=np.int64)
        if self._rq is None:
            return y
        return requantize(y, np.asarray(m, np.int64), np.asarray(e, np.int64),
                          bias=np.asarray(0 if bias is None else bias, np.int64),
                          lo=self._rq.lo, hi=self._rq.hi, m_bits=self._rq.m_bits)

    # --- gateware ---------------------------------------------------------

    _write_latency = latency

    def _datapath(self, m, store, rbuf, rkb, accept):
        # Lanes. The activations go through a register after the store
        # (block RAM clock-to-out is ~6 ns on ECP5) and then down a chain,
        # one register per group of ``act_fanout`` lanes, so that no register
        # drives multipliers all over the chip; lane l runs ``skew(l)``
        # cycles late, its weights are delayed to match and its result is
        # delayed back. Products go through ``_PRODUCT_REGS`` registers (see
        # there) and the adder tree is registered at every level (an
        # unregistered level lets Yosys merge two levels into a LUT
        # carry-save adder: 2.3x the LUTs).
        L, K = self._lanes, self._kpc
        last_k, last_n = self.wgt.payload.last_k, self.wgt.payload.last_n
        act_shape = self.act.payload.data.shape()
        wgt_bits = K * self._wgt_bits
        acts = [self._read_row(m, store, rbuf, rkb, name="act_g0")]
        for g in range(1, self._skew + 1):
            acts.append(delay(m, acts[-1], 1, name=f"act_g{g}"))
        v = [valid_delay(m, accept, self._base_latency, name="v")]
        vk = [valid_delay(m, accept & last_k, self._base_latency, name="vk")]
        for g in range(1, self._skew + 1):
            v.append(valid_delay(m, v[-1], 1, name=f"v_g{g}"))
            vk.append(valid_delay(m, vk[-1], 1, name=f"vk_g{g}"))
        totals = []
        for lane in range(L):
            g = lane // self._act_fanout
            act = data.View(act_shape, acts[g])
            wgt = data.View(data.ArrayLayout(signed(self._wgt_bits), K),
                            delay(m, self.wgt.payload.data.as_value()[lane * wgt_bits:
                                                                     (lane + 1) * wgt_bits],
                                  2 + g, name=f"wgt_l{lane}"))
            prods = []
            for k in range(K):
                p = Signal(signed(self._act_bits + self._wgt_bits), name=f"p{lane}_{k}")
                m.d.sync += p.eq(act[k] * wgt[k])
                prods.append(delay(m, p, _PRODUCT_REGS - 1, name=f"pd{lane}_{k}"))
            s, tlat = adder_tree(m, prods, levels_per_stage=1, name=f"sum{lane}")
            assert 2 + _PRODUCT_REGS + tlat == self._base_latency
            # Accumulate; a block's total leaves on its last k-block.
            total = accumulate(m, s, v[g], vk[g], bits=self._acc_bits, name=lane)
            totals.append(delay(m, total, 1 + self._skew - g, name=f"total{lane}_d"))
        vk = valid_delay(m, vk[-1], 1, name="vk_out")
        vn = delay(m, last_n, self._lane_latency, name="vn")

        if self._rq is None:
            return Results(vk, totals, vn)
        w_en, results, res_last, overflow = self._rq.elaborate(m, self, vk, totals, vn)
        return Results(w_en, results, res_last, (overflow,))


