"""Dyadic requantizer and residual adder (SPEC section 2), bit-exact with
:func:`trilut.golden.quant.requantize` and :func:`trilut.golden.quant.residual_add`.

Arithmetic (one lane)::

    y = clamp(((acc + bias) * m + (1 << (e - 1))) >> e, lo, hi)

computed as ``q = floor((acc + bias) * m / 2**(e-1))`` followed by
``y = (clamp(q, 2*lo - 1, 2*hi) + 1) >> 1``, which is the same integer for
every input (``floor((p + 2**(e-1)) / 2**e) = floor((floor(p / 2**(e-1)) + 1) / 2)``;
``(q + 1) >> 1`` is monotone, so clamping ``q`` to the preimage of
``[lo, hi]`` equals clamping the result). Round half up, ties toward
+infinity, as golden.

Datapath (:func:`dyadic_floor`): the product is split into 18x18 signed
partial products (one MULT18X18D each: ``ceil((s_bits - 1) / 17)`` x
``ceil(m_bits / 17)`` per lane, 2 for a 33-bit ``acc + bias`` and a 16-bit m),
each registered, summed, then shifted right by ``e - 1`` in two registered
stages (multiples of 8, then 0..7). The requantizer saturates between the two
shift stages to ``out_bits + 8`` bits, which cannot change a clamped result;
the residual adder keeps full width (its two terms may cancel).

Per-channel constants (``channels > 1``): each unit holds a table of
``channels`` entries written through the ``param`` stream, one entry per
beat in channel order from channel 0; ``last`` marks the final entry (the
next beat writes channel 0 again). A beat past ``channels`` entries is
dropped and raises the sticky ``error``. The table is read by a channel
counter that advances by ``lanes`` per data beat, wraps when it reaches the
runtime ``num_channels`` input (valid: 1..channels, a multiple of ``lanes``)
and resets after a beat with ``last``. ``param.ready`` is always high; write
the table while no data is in flight. With ``channels == 1`` the constants
are plain input ports (``m``, ``e``, ``bias``; ``mx``, ``ex``, ``my``, ``ey``),
held stable while rows are in flight.

The compiler checks its constants with :func:`check_requant_params`; the
hardware supports every (m, e) that check accepts (e up to
:data:`~trilut.golden.quant.E_MAX`; shifts past the product width give 0 or
-1 before rounding, as the integer formula does).
"""
import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.quant import E_MAX, M_BITS_DEFAULT
from .arith import NO_COLLISION, adder_tree, delay, valid_delay
from .queue import CREDIT_RETURN, OutputQueue

__all__ = ["check_requant_params", "dyadic_floor", "dyadic_latency", "mult18_count",
           "Requantizer", "ResidualAdd", "E_FIELD"]

DSP_CHUNK = 17          # low chunks of a wide operand: 17 unsigned bits (+0 -> 18 signed)
DSP_WIDTH = 18          # MULT18X18D operand width (signed)
E_FIELD = unsigned((E_MAX).bit_length())   # e in [1, E_MAX]: 6 bits
M_BITS_MAX = 2 * DSP_CHUNK                 # m up to two DSP columns


def _int_values(name, value):
    """An int or an integer array as a flat array of Python ints (TypeError otherwise)."""
    if isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == bool):
        raise TypeError(f"{name} must be an integer or an integer array, not {value!r}")
    if isinstance(value, numbers.Integral):
        return np.array([int(value)], dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuO" or (arr.dtype.kind == "O" and not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.flat)):
        raise TypeError(f"{name} must be an integer or an integer array, not {value!r}")
    return arr.astype(object).reshape(-1)


def check_requant_params(m, e, m_bits=M_BITS_DEFAULT, *, e_max=E_MAX):
    """Check dyadic constants before they are sent to the device.

    ``m`` and ``e`` are ints or integer arrays (per channel). Raises
    ``TypeError`` for non-integers and ``ValueError`` naming the first bad
    value when m is outside [0, 2**m_bits) or e outside [1, e_max] (the
    shifter takes ``e - 1`` in :data:`E_FIELD`, 6 bits; ``E_MAX`` = 62 as in
    golden). ``m_bits`` must be in [1, 34] (two DSP columns).
    """
    check_int("m_bits", m_bits, 1, M_BITS_MAX)
    check_int("e_max", e_max, 1, E_MAX)
    for name, arr, lo, hi in (("m", _int_values("m", m), 0, (1 << m_bits) - 1),
                              ("e", _int_values("e", e), 1, e_max)):
        bad = [int(v) for v in arr if not lo <= v <= hi]
        if bad:
            what = f"[0, 2**{m_bits})" if name == "m" else f"[1, {e_max}]"
            raise ValueError(f"{name} must be in {what}, got {bad[0]}")


def _chunks(value, is_signed):
    """Split ``value`` into DSP operands (18-bit signed Values) and their bit offsets.

    Low chunks are 17 unsigned bits; the top chunk takes the sign (up to 18
    bits) for a signed value, or at most 17 bits (zero-extended) for an
    unsigned one.
    """
    width = len(value)
    top_max = DSP_WIDTH if is_signed else DSP_CHUNK
    parts, offset = [], 0
    while width - offset > top_max:
        parts.append((Cat(value[offset:offset + DSP_CHUNK], Const(0, 1)).as_signed(), offset))
        offset += DSP_CHUNK
    top = value[offset:]
    parts.append((top.as_signed() if is_signed else Cat(top, Const(0, 1)).as_signed(), offset))
    return parts


def mult18_count(value_bits, m_bits):
    """MULT18X18D blocks of one :func:`dyadic_floor` (signed value, unsigned m)."""
    vc = 1 if value_bits <= DSP_WIDTH else 1 + -(-(value_bits - DSP_WIDTH) // DSP_CHUNK)
    return vc * -(-m_bits // DSP_CHUNK)


#: Cycles of the requantizer's round-and-clamp (a ``finish`` of
#: :func:`dyadic_floor`): its compares and rounding add are registered.
ROUND_CLAMP_LATENCY = 1


def dyadic_latency(value_bits, m_bits):
    """Latency of :func:`dyadic_floor` for these operand widths."""
    n = mult18_count(value_bits, m_bits)
    return 4 if n == 1 else 5 + (n - 1).bit_length() // 2


def dyadic_floor(m, value, mult, shift, *, sat_bits=None, finish=None, name="dy"):
    """``floor(value * mult / 2**shift)``, pipelined; returns ``(q, latency)``.

    ``value`` signed, ``mult`` unsigned, ``shift`` (``e - 1``, 6 bits) are
    sampled in the same cycle; ``q`` is valid ``latency`` cycles later
    (registers without reset: each multiplier's operands registered, so
    that the placer can put them beside it, partial products registered,
    their sum registered, two registered shift stages). With ``sat_bits`` =
    W, the value is saturated to [-2**W, 2**W - 1] between the shift stages
    (exact after any clamp to a range within +-2**(W - 8)); the saturation is then
    a select after the last registers (its compares registered beside the
    fine shift).
    ``finish(m, v, name)`` -> ``(value, latency)`` is a pipeline applied to
    the result (``q`` is its output, ``latency`` more cycles); with
    ``sat_bits``, to each of the three candidates (the shifted value and the
    two shifted bounds) before the saturation select, so that the select of
    registered values is the last step.
    """
    if finish is None:
        def finish(m, v, name):
            return v, 0
    vb, mb = len(value), len(mult)
    prod_shape = signed(vb + mb)      # |value| <= 2**(vb-1), mult < 2**mb
    pps = []
    for i, (a, oa) in enumerate(_chunks(value, True)):
        for j, (b, ob) in enumerate(_chunks(mult, False)):
            a_r, b_r, pp = (Signal(signed(w), name=f"{name}_{n}{i}{j}", reset_less=True)
                            for n, w in (("a", DSP_WIDTH), ("b", DSP_WIDTH),
                                         ("pp", 2 * DSP_WIDTH)))
            m.d.sync += [a_r.eq(a), b_r.eq(b), pp.eq(a_r * b_r)]
            pps.append(pp << (oa + ob) if oa + ob else pp)
    latency = 2
    prod = Signal(prod_shape, name=f"{name}_prod", reset_less=True)
    if len(pps) == 1:
        m.d.comb += prod.eq(pps[0])
    else:
        total, lat = adder_tree(m, pps, name=f"{name}_pps")
        m.d.sync += prod.eq(total)
        latency += lat + 1
    sh = delay(m, shift, latency, name=f"{name}_sh")
    coarse = Signal(prod_shape, name=f"{name}_coarse", reset_less=True)
    m.d.sync += coarse.eq(prod >> Cat(Const(0, 3), sh[3:]))
    sh_f = delay(m, sh[:3], 1, name=f"{name}_shf")
    latency += 1
    if sat_bits is not None and len(coarse) > sat_bits + 1:
        # floor(sat(c) / 2^f) with the compares beside the shift, not before
        # it: c shifted (in range: its low sat_bits + 1 bits after the shift
        # are the whole value) and the two compares are registered, then
        # select (after the register) that or a saturated bound shifted.
        hi, lo = (1 << sat_bits) - 1, -(1 << sat_bits)
        fine = Signal(signed(sat_bits + 1), name=f"{name}_fine", reset_less=True)
        over, under = (Signal(name=f"{name}_{n}", reset_less=True) for n in ("over", "under"))
        sh_q = Signal(3, name=f"{name}_shq", reset_less=True)
        m.d.sync += [fine.eq((coarse >> sh_f)[:sat_bits + 1]), over.eq(coarse > hi),
                     under.eq(coarse < lo), sh_q.eq(sh_f)]
        cands = [Const(b, signed(sat_bits + 1)) >> sh_q for b in (hi, lo)] + [fine]
        outs = [finish(m, c, f"{name}_fin{i}") for i, c in enumerate(cands)]
        flat = outs[0][1]
        over, under = (delay(m, v, flat, name=f"{name}_{n}")
                       for v, n in ((over, "over_d"), (under, "under_d")))
        q = Signal(outs[0][0].shape(), name=f"{name}_q")
        m.d.comb += q.eq(Mux(over, outs[0][0], Mux(under, outs[1][0], outs[2][0])))
        return q, latency + 1 + flat
    q = Signal(coarse.shape(), name=f"{name}_q", reset_less=True)
    m.d.sync += q.eq(coarse >> sh_f)
    q, flat = finish(m, q, name)
    return q, latency + 1 + flat


class _ChannelTable:
    """Runtime constants: plain ports (``channels == 1``) or a per-channel
    table written through a ``param`` stream (see the module docstring)."""

    def __init__(self, fields, *, channels, lanes):
        check_int("channels", channels, 1, 4096)
        if channels > 1 and channels % lanes:
            raise ValueError(f"channels must be a multiple of lanes = {lanes}, not {channels}")
        self.fields, self.channels, self.lanes = dict(fields), channels, lanes
        self.words = max(1, channels // lanes)
        self.layout = data.StructLayout(self.fields)

    def members(self):
        if self.channels == 1:
            return {name: In(shape) for name, shape in self.fields.items()}
        return {"param": In(stream.Signature(data.StructLayout({**self.fields, "last": 1}))),
                "num_channels": In(range(self.channels + 1))}

    def param_beats(self, **columns):
        """Payload dicts of the ``param`` stream for per-channel arrays."""
        if self.channels == 1:
            raise ValueError("channels == 1: the constants are plain ports, not a table")
        cols = {k: np.asarray(v).reshape(-1) for k, v in columns.items()}
        if set(cols) != set(self.fields):
            raise ValueError(f"need exactly the fields {tuple(self.fields)}, got {tuple(cols)}")
        n = {len(v) for v in cols.values()}
        if len(n) != 1 or not 1 <= n.pop() <= self.channels:
            raise ValueError(f"per-channel arrays must have one common length in "
                             f"[1, {self.channels}]")
        count = len(next(iter(cols.values())))
        return [{**{k: int(v[i]) for k, v in cols.items()}, "last": int(i == count - 1)}
                for i in range(count)]

    def elaborate(self, m, owner, advance, last, *, name="tab"):
        """Per-lane dicts field -> Value, valid :attr:`latency` cycles after
        ``advance`` (the data beat at the counter's channel), and an overflow
        pulse."""
        if self.channels == 1:
            ports = {k: getattr(owner, k) for k in self.fields}
            return [ports] * self.lanes, Const(0)
        L, words = self.lanes, self.words
        # Written while no data is in flight (module docstring).
        mems = [memory.Memory(shape=self.layout, depth=words, init=[], attrs=NO_COLLISION)
                for _ in range(L)]
        for lane, mem in enumerate(mems):
            m.submodules[f"{name}_mem{lane}"] = mem

        # Write side: channel order, lane-major within a word.
        param = owner.param
        wword = Signal(range(words), name=f"{name}_wword")
        wlane = Signal(range(L), name=f"{name}_wlane")
        wcount = Signal(range(self.channels + 1), name=f"{name}_wcount")
        overflow = Signal(name=f"{name}_overflow")
        m.d.comb += [param.ready.eq(1),
                     overflow.eq(param.valid & (wcount == self.channels))]
        for lane, mem in enumerate(mems):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wword),
                         wp.en.eq(param.valid & ~overflow & (wlane == lane))]
            for k in self.fields:
                m.d.comb += wp.data[k].eq(param.payload[k])
        with m.If(param.valid):
            with m.If(param.payload.last):
                m.d.sync += [wword.eq(0), wlane.eq(0), wcount.eq(0)]
            with m.Elif(~overflow):
                m.d.sync += wcount.eq(wcount + 1)
                with m.If(wlane == L - 1):
                    m.d.sync += [wlane.eq(0), wword.eq(wword + 1)]
                with m.Else():
                    m.d.sync += wlane.eq(wlane + 1)

        # Read side: one word per data beat.
        rword = Signal(range(words), name=f"{name}_rword")
        # Channels covered once the current beat is done: (rword + 1) * lanes.
        rnext = Signal(range(self.channels + 1), name=f"{name}_rnext", init=L)
        wrap = Signal(name=f"{name}_wrap")
        m.d.comb += wrap.eq(last | (rnext >= owner.num_channels) | (rnext == self.channels))
        with m.If(advance):
            with m.If(wrap):
                m.d.sync += [rword.eq(0), rnext.eq(L)]
            with m.Else():
                m.d.sync += [rword.eq(rword + 1), rnext.eq(rnext + L)]
        lanes = []
        for lane, mem in enumerate(mems):
            rp = mem.read_port(domain="sync")
            m.d.comb += [rp.addr.eq(rword), rp.en.eq(advance)]
            # Block RAM clock-to-out is ~6 ns on ECP5: register it once more.
            reg = Signal(self.layout, name=f"{name}_p{lane}", reset_less=True)
            m.d.sync += reg.eq(rp.data)
            lanes.append({k: reg[k] for k in self.fields})
        return lanes, overflow

    @property
    def latency(self):
        """Cycles from ``advance`` to the constants (ports: usable at once,
        counted as 1 so that the data path has its input register)."""
        return 1 if self.channels == 1 else 2


class _RequantPath:
    """The requantizer's datapath and constants, without handshake: shared
    by :class:`Requantizer` and :class:`~trilut.hw.int8mm.Int8Engine`."""

    def __init__(self, *, lanes, acc_bits, m_bits, out_bits, bias_bits, channels):
        check_int("lanes", lanes, 1, 256)
        check_int("acc_bits", acc_bits, 2, 48)
        check_int("m_bits", m_bits, 1, M_BITS_MAX)
        check_int("bias_bits", bias_bits, 1, 48)
        check_int("out_bits", out_bits, 2, 32)
        if out_bits not in (8, 16):
            raise ValueError(f"out_bits must be 8 or 16, not {out_bits}")
        self.lanes, self.acc_bits, self.m_bits = lanes, acc_bits, m_bits
        self.out_bits, self.bias_bits, self.channels = out_bits, bias_bits, channels
        self.lo, self.hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
        self.s_bits = max(acc_bits, bias_bits) + 1
        self.table = _ChannelTable({"m": unsigned(m_bits), "e": E_FIELD,
                                    "bias": signed(bias_bits)},
                                   channels=channels, lanes=lanes)
        # Constants lookup, 1 bias add, dyadic_floor with its clamp-and-round,
        # 1 output register.
        self.dyadic_latency = dyadic_latency(self.s_bits, m_bits) + ROUND_CLAMP_LATENCY
        self.latency = self.table.latency + 1 + self.dyadic_latency + 1
        self.mult18 = lanes * mult18_count(self.s_bits, m_bits)

    def param_beats(self, m, e, bias):
        check_requant_params(m, e, self.m_bits)
        b = _int_values("bias", bias)
        lo, hi = -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1
        if any(not lo <= v <= hi for v in b):
            raise ValueError(f"bias must fit signed {self.bias_bits} bits")
        return self.table.param_beats(m=m, e=e, bias=bias)

    def elaborate(self, m, owner, advance, values, last):
        """``values`` (one per lane) and ``last`` are sampled when ``advance``
        is high; returns ``(valid, ys, last, overflow)`` ``latency`` cycles
        later (``valid``/``last`` from resettable registers)."""
        params, overflow = self.table.elaborate(m, owner, advance, last, name="rq")
        # (clamp(q, 2 lo - 1, 2 hi) + 1) >> 1: the two compares and the
        # rounding add registered side by side (ROUND_CLAMP_LATENCY), then a
        # select of hi, lo or (q + 1) >> 1; applied to each of dyadic_floor's
        # candidates, its saturation select last.
        qlo, qhi = 2 * self.lo - 1, 2 * self.hi

        def clamp_round(m, q, name):
            gt, lt = (Signal(name=f"{name}_{n}", reset_less=True) for n in ("gt", "lt"))
            r = Signal(signed(len(q)), name=f"{name}_r", reset_less=True)
            m.d.sync += [gt.eq(q > qhi), lt.eq(q < qlo), r.eq((q + 1) >> 1)]
            return Mux(gt, self.hi, Mux(lt, self.lo, r)), ROUND_CLAMP_LATENCY

        ys = []
        for lane, (v, p) in enumerate(zip(values, params)):
            acc = delay(m, v, self.table.latency, name=f"rq_acc{lane}")
            s = Signal(signed(self.s_bits), name=f"rq_s{lane}", reset_less=True)
            sh = Signal(E_FIELD, name=f"rq_sh{lane}", reset_less=True)
            m.d.sync += [s.eq(acc + p["bias"]), sh.eq(p["e"] - 1)]
            mult = delay(m, p["m"], 1, name=f"rq_m{lane}")
            q, lat = dyadic_floor(m, s, mult, sh, sat_bits=self.out_bits + 8,
                                  finish=clamp_round, name=f"rq{lane}")
            assert lat == self.dyadic_latency
            y = Signal(signed(self.out_bits), name=f"rq_y{lane}", reset_less=True)
            m.d.sync += y.eq(q)
            ys.append(y)
        valid = valid_delay(m, advance, self.latency, name="rq_valid")
        last_out = delay(m, last, self.latency, name="rq_last")
        return valid, ys, last_out, overflow


class Requantizer(wiring.Component):
    """Streaming dyadic requantizer: ``y = clamp(((acc + bias) * m +
    (1 << (e-1))) >> e, lo, hi)``, bit-exact with golden ``requantize``.

    Parameters: ``acc_bits`` input width (default 32); ``m_bits`` width of
    the unsigned multiplier m (default 16, up to 34); ``bias_bits`` (default
    32); ``out_bits`` 8 or 16 (``lo``/``hi`` = the signed range);
    ``channels`` per-channel table entries (1 = scalar ports); ``lanes``
    elements per beat (default 1: ``data`` is a scalar; otherwise an array,
    element l of a beat uses channel ``counter + l``).

    Ports: ``inp`` stream ``{"data": signed(acc_bits) [x lanes], "last": 1}``;
    ``out`` stream ``{"data": signed(out_bits) [x lanes], "last": 1}``;
    constants ``m``/``e``/``bias`` (channels == 1) or ``param`` stream
    ``{"m", "e", "bias", "last"}`` and ``num_channels`` (see the module
    docstring); ``error`` sticky (param table overflow; cleared by reset).

    Throughput one beat per cycle; latency :attr:`latency` cycles from
    ``inp`` accepted to the result entering the output FIFO, plus 1-2 for
    the FIFO (measured: a row of n beats at full rate takes n + latency + 2
    cycles from the first accept to the last output; latency 9 at the
    defaults, 10 with a table).
    Honours backpressure; ``inp.ready`` depends only on the FIFO level, never
    combinationally on ``out.ready`` or ``inp.valid``.
    DSP: :attr:`mult18` MULT18X18D (2 per lane at acc_bits = bias_bits = 32,
    m_bits = 16).
    Tested: acc and bias over all of int32 (and acc_bits 24), m over the full
    m_bits range (16 and 17 bits) including 0 and 2**m_bits - 1, e in [1, 62],
    exact ties of both signs, channels 1 and 8 with lanes 1; lanes 2 and 3
    (channels 1 and 6) inside :class:`~trilut.hw.int8mm.Int8Engine`.
    """

    def __init__(self, *, acc_bits=32, m_bits=M_BITS_DEFAULT, out_bits=8, channels=1,
                 bias_bits=32, lanes=1):
        self._path = _RequantPath(lanes=lanes, acc_bits=acc_bits, m_bits=m_bits,
                                  out_bits=out_bits, bias_bits=bias_bits, channels=channels)

        def beat(shape):
            return data.StructLayout({
                "data": shape if lanes == 1 else data.ArrayLayout(shape, lanes), "last": 1})
        super().__init__({
            "inp": In(stream.Signature(beat(signed(acc_bits)))),
            "out": Out(stream.Signature(beat(signed(out_bits)))),
            **self._path.table.members(),
            "error": Out(1),
        })

    acc_bits = property(lambda self: self._path.acc_bits)
    m_bits = property(lambda self: self._path.m_bits)
    out_bits = property(lambda self: self._path.out_bits)
    bias_bits = property(lambda self: self._path.bias_bits)
    channels = property(lambda self: self._path.channels)
    lanes = property(lambda self: self._path.lanes)
    lo = property(lambda self: self._path.lo, doc="lower clamp bound")
    hi = property(lambda self: self._path.hi, doc="upper clamp bound")
    latency = property(lambda self: self._path.latency,
                       doc="cycles from inp accepted to the FIFO write")
    mult18 = property(lambda self: self._path.mult18, doc="MULT18X18D blocks used")

    def param_beats(self, m, e, bias):
        """``param`` stream payloads for per-channel arrays (checked first)."""
        return self._path.param_beats(m, e, bias)

    def cycles(self, elements):
        """Analytic cycles for ``elements`` values at full rate (fill to drain)."""
        return -(-elements // self.lanes) + self.latency + 2

    def elaborate(self, platform):
        m = Module()
        p = self._path
        oq = OutputQueue(m, self.out, depth=p.latency + CREDIT_RETURN)
        accept = oq.issue
        m.d.comb += [self.inp.ready.eq(oq.room), accept.eq(self.inp.valid & oq.room)]
        d = self.inp.payload.data
        values = [d] if p.lanes == 1 else [d[i] for i in range(p.lanes)]
        valid, ys, last, overflow = p.elaborate(m, self, accept, values, self.inp.payload.last)
        error = Signal()
        with m.If(overflow):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        oq.push(valid, data=Cat(*ys), last=last)
        return m


class ResidualAdd(wiring.Component):
    """Residual add at two scales, bit-exact with golden ``residual_add``:
    ``clamp(round(x * mx / 2**ex) + round(y * my / 2**ey), lo, hi)``, each
    term rounded half up, unclamped, the sum clamped once.

    Two input streams, joined element by element: ``x`` (the int32
    accumulator of a linear layer, ``{"data": signed(x_bits), "last": 1}``)
    and ``y`` (the residual stream, ``{"data": signed(y_bits), "last": 1}``).
    A beat is taken from both at once; ``x.ready`` depends on ``y.valid`` and
    vice versa (a join), never on ``out.ready``. ``out.last`` is ``x.last``;
    ``x.last != y.last`` on a pair raises the sticky ``error`` (as does a
    param table overflow). ``out`` ``{"data": signed(out_bits), "last": 1}``,
    out_bits 16 (default) or 8.

    Constants: ``mx``, ``ex``, ``my``, ``ey`` as plain ports (channels == 1)
    or a per-channel table (``param`` stream ``{"mx", "ex", "my", "ey",
    "last"}`` and ``num_channels``, as :class:`Requantizer`).

    Throughput one element per cycle; latency :attr:`latency` cycles from
    accept to the FIFO write (+1-2 for the FIFO). Honours backpressure.
    Full-width terms (no saturation: they may cancel). DSP: :attr:`mult18`
    (3 at x_bits = 32, y_bits = 16, m_bits = 16).
    Tested: x over int32 (and 24 bits), y over int16, m over the full range
    (incl. 0 and 2**16 - 1), e in [1, 62], ties of both signs, cancelling
    terms, per-channel constants (channels 4).
    """

    def __init__(self, *, x_bits=32, y_bits=16, m_bits=M_BITS_DEFAULT, out_bits=16,
                 channels=1):
        check_int("x_bits", x_bits, 2, 48)
        check_int("y_bits", y_bits, 2, 48)
        check_int("m_bits", m_bits, 1, M_BITS_MAX)
        check_int("out_bits", out_bits, 2, 32)
        if out_bits not in (8, 16):
            raise ValueError(f"out_bits must be 8 or 16, not {out_bits}")
        self._x_bits, self._y_bits, self._m_bits = x_bits, y_bits, m_bits
        self._out_bits, self._channels = out_bits, channels
        self._lo, self._hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
        self._table = _ChannelTable({"mx": unsigned(m_bits), "ex": E_FIELD,
                                     "my": unsigned(m_bits), "ey": E_FIELD},
                                    channels=channels, lanes=1)
        lat = [dyadic_latency(b, m_bits) for b in (x_bits, y_bits)]
        self._pad = (max(lat) - lat[0], max(lat) - lat[1])
        # Constants lookup, dyadic_floor, round, sum, clamp.
        self._latency = self._table.latency + max(lat) + 4
        self._mult18 = mult18_count(x_bits, m_bits) + mult18_count(y_bits, m_bits)

        def beat(bits):
            return stream.Signature(data.StructLayout({"data": signed(bits), "last": 1}))
        super().__init__({
            "x": In(beat(x_bits)), "y": In(beat(y_bits)), "out": Out(beat(out_bits)),
            **self._table.members(),
            "error": Out(1),
        })

    x_bits = property(lambda self: self._x_bits)
    y_bits = property(lambda self: self._y_bits)
    m_bits = property(lambda self: self._m_bits)
    out_bits = property(lambda self: self._out_bits)
    channels = property(lambda self: self._channels)
    lo = property(lambda self: self._lo)
    hi = property(lambda self: self._hi)
    latency = property(lambda self: self._latency,
                       doc="cycles from a pair accepted to the FIFO write")
    mult18 = property(lambda self: self._mult18, doc="MULT18X18D blocks used")

    def param_beats(self, mx, ex, my, ey):
        """``param`` stream payloads for per-channel arrays (checked first)."""
        check_requant_params(mx, ex, self._m_bits)
        check_requant_params(my, ey, self._m_bits)
        return self._table.param_beats(mx=mx, ex=ex, my=my, ey=ey)

    def cycles(self, elements):
        """Analytic cycles for ``elements`` pairs at full rate (fill to drain)."""
        return elements + self._latency + 2

    def elaborate(self, platform):
        m = Module()
        oq = OutputQueue(m, self.out, depth=self._latency + CREDIT_RETURN)
        room, accept = oq.room, oq.issue
        x, y = self.x, self.y
        m.d.comb += [x.ready.eq(y.valid & room), y.ready.eq(x.valid & room),
                     accept.eq(x.valid & y.valid & room)]
        params, overflow = self._table.elaborate(m, self, accept, x.payload.last, name="ra")
        p = params[0]
        rounded = []
        for tag, src, mf, ef, pad in (("x", x, "mx", "ex", self._pad[0]),
                                      ("y", y, "my", "ey", self._pad[1])):
            v = delay(m, src.payload.data, self._table.latency, name=f"ra_{tag}")
            sh = Signal(E_FIELD, name=f"ra_sh{tag}")
            m.d.comb += sh.eq(p[ef] - 1)
            q, lat = dyadic_floor(m, v, p[mf], sh, name=f"ra_{tag}")
            assert self._table.latency + lat + pad + 4 == self._latency
            q = delay(m, q, pad, name=f"ra_pad{tag}")
            r = Signal(q.shape(), name=f"ra_r{tag}")
            m.d.sync += r.eq((q + 1) >> 1)
            rounded.append(r)
        total = Signal(signed(max(len(r) for r in rounded) + 1), name="ra_sum")
        m.d.sync += total.eq(rounded[0] + rounded[1])
        # The clamp: the sum's two compares (carry chains as long as the
        # sum's) registered beside its low bits, then the select.
        over, under = Signal(name="ra_over"), Signal(name="ra_under")
        low = Signal(signed(self._out_bits), name="ra_low")
        m.d.sync += [over.eq(total > self._hi), under.eq(total < self._lo),
                     low.eq(total[:self._out_bits])]
        out = Signal(signed(self._out_bits), name="ra_out")
        m.d.sync += out.eq(Mux(over, self._hi, Mux(under, self._lo, low)))
        valid = valid_delay(m, accept, self._latency, name="ra_valid")
        last = delay(m, x.payload.last, self._latency, name="ra_last")

        error = Signal()
        with m.If(overflow | (accept & (x.payload.last != y.payload.last))):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        oq.push(valid, data=out, last=last)
        return m
