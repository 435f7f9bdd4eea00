# amaranth: UnusedElaboratable=no
# (its ShiftGELU and requantizer paths are created in __init__, for their latencies;
# they are elaborated as our submodules, and if we are never elaborated
# Amaranth warns about the outer component already)
"""The gated MLP's elementwise unit: int16 ``gate`` and ``up`` rows -> int16
``h``, bit-exact with :func:`trilut.golden.llm.gate_product`::

    act_prod = gate * sigmoid(gate)        "silu":  ShiftGELU "accurate" (x0 = act_x0)
             = max(gate, 0)^2              "relu2": one MULT18X18D, exact
    act      = requantize(act_prod; act_m, act_e)      int16
    h        = requantize(act * up; hid_m, hid_e)       int16 (|act * up| <= 2^30)

SiLU needs no new hardware: golden evaluates it as ShiftGELU "accurate" at a
scale whose IEXP constant is ``act_x0`` (the 1.702 slope is folded into the
scale), so :class:`~trilut.hw.shiftgelu.ShiftGELU` (mode "accurate", int16,
n = 16, 16-bit sigmoid) with ``x0 = act_x0`` produces ``act_prod`` exactly;
this unit instantiates it in front of the join. ReLU^2 is a squarer (one
DSP) in the same pipeline slot, so both modes share the rest.

Datapath after the join of ``act_prod`` (or ``gate`` for relu2) with ``up``:
one register (the square), the requantizer datapath to ``act``
(:mod:`trilut.hw.requant`, scalar constants), ``act * up`` (one
MULT18X18D), the requantizer to ``h``, an output FIFO. ``up`` waits in a
delay line beside the first requantizer.

Ports: ``gate``, ``up``: ``{"data": signed(16), "last": 1}``; ``out``
``{"data": signed(16), "last": 1}``; ``act_m``, ``act_e``, ``hid_m``,
``hid_e`` (requantizer constants) and, for silu, ``x0`` (signed 16):
held stable while rows are in flight (``x0`` from two cycles before a row).
``error`` (sticky, cleared by reset): a row longer than ``max_len`` on
either input (both rows are cut at ``max_len`` elements, the rest up to
each ``last`` dropped, so the next rows pair up again; for silu ShiftGELU
cuts the gate row), ``gate`` and ``up`` disagreeing on ``last`` (pairs are
still processed in order), or an invalid ``x0`` (ShiftGELU; results
unspecified).

Handshake: honours backpressure; a pair is taken only when both inputs are
valid and the output FIFO has room for everything in flight (``ready`` of
each input depends on the other's ``valid`` and on registers, never on
``out.ready``). Throughput one element per cycle. Latency: :meth:`latency`
cycles from a pair accepted to its result valid (plus ShiftGELU's latency
for silu). DSP: relu2 1 + 2 x 2 (requantizers) + 1 = 6 MULT18X18D; silu
adds ShiftGELU's 3 and drops the squarer.

Tested (Verilator, against golden gate_product): both modes; random and
extreme gate/up (-32768, 32767, 0, all-equal, one-hot), x0 in {-1, -5,
-64, -300, -32767}, act/hid constants from m = 0 to 2^16 - 1 and e in [1, 62].
"""
from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.llm import ACTS
from ..golden.nonlinear import X0_BITS
from ..golden.quant import M_BITS_DEFAULT
from .arith import delay
from .queue import CREDIT_RETURN, OutputQueue
from .requant import E_FIELD, M_BITS_MAX, _RequantPath
from .shiftgelu import ShiftGELU

__all__ = ["GateMul"]

DATA_BITS = 16                 # gate, up, act, h: int16
PROD_BITS = 32                 # act_prod (31 bits from ShiftGELU, 30 for relu2), act * up


class GateMul(wiring.Component):
    """Gate product unit (module docstring).

    Parameters: ``act`` "silu" or "relu2"; ``max_len`` longest row (1 ..
    65536, default 4096); ``m_bits`` width of the multipliers (default 16).
    """

    def __init__(self, act="silu", max_len=4096, m_bits=M_BITS_DEFAULT):
        if act not in ACTS:
            raise ValueError(f"act must be one of {ACTS}, got {act!r}")
        check_int("max_len", max_len, 1, 1 << 16)
        check_int("m_bits", m_bits, 1, M_BITS_MAX)
        self._act, self._max_len, self._m_bits = act, max_len, m_bits
        self._gelu = ShiftGELU(mode="accurate", in_bits=DATA_BITS, max_len=max_len) \
            if act == "silu" else None
        self._rq = [_RequantPath(lanes=1, acc_bits=PROD_BITS, m_bits=m_bits,
                                 out_bits=DATA_BITS, bias_bits=1, channels=1) for _ in range(2)]
        row = stream.Signature(data.StructLayout({"data": signed(DATA_BITS), "last": 1}))
        members = {"gate": In(row), "up": In(row), "out": Out(row),
                   "act_m": In(unsigned(m_bits)), "act_e": In(E_FIELD),
                   "hid_m": In(unsigned(m_bits)), "hid_e": In(E_FIELD), "error": Out(1)}
        if act == "silu":
            members["x0"] = In(signed(X0_BITS))
        super().__init__(members)

    act = property(lambda self: self._act)
    max_len = property(lambda self: self._max_len)
    m_bits = property(lambda self: self._m_bits)
    pipe_latency = property(lambda self: 1 + self._rq[0].latency + 1 + self._rq[1].latency,
                            doc="cycles from a pair accepted to its h entering the FIFO")

    def latency(self):
        """Cycles from a (gate-side, up) pair accepted at the join to the
        result valid: :attr:`pipe_latency` and the buffered FIFO (2). For silu
        the gate element spends ShiftGELU's latency before the join."""
        return self.pipe_latency + 2

    def elaborate(self, platform):
        m = Module()
        if self._gelu is not None:
            m.submodules.gelu = gelu = self._gelu
            wiring.connect(m, wiring.flipped(self.gate), gelu.inp)
            m.d.comb += gelu.x0.eq(self.x0)
            prod_in, prod_err = gelu.out, gelu.error
        else:
            prod_in, prod_err = self.gate, Const(0)
        up = self.up

        oq = OutputQueue(m, self.out, depth=self.pipe_latency + CREDIT_RETURN)
        room = oq.room
        # Join, with rows cut at max_len on each stream that is not cut already
        # (ShiftGELU cuts the gate rows itself), so the pairs stay in step.
        error = Signal()
        ok, last, cuts = {}, {}, []
        for name, s in (("prod", prod_in), ("up", up)):
            if name == "prod" and self._gelu is not None:
                ok[name], last[name] = s.valid, s.payload.last
                continue
            idx = Signal(range(self._max_len), name=f"{name}_idx")
            drop = Signal(name=f"{name}_drop")
            at_max = idx == self._max_len - 1
            ok[name], last[name] = s.valid & ~drop, s.payload.last | at_max
            cuts.append((s, idx, drop, at_max))
        take = oq.issue
        m.d.comb += take.eq(room & ok["prod"] & ok["up"])
        for name, s in (("prod", prod_in), ("up", up)):
            other = ok["up" if name == "prod" else "prod"]
            drop = next((c[2] for c in cuts if c[0] is s), Const(0))
            m.d.comb += s.ready.eq(drop | (room & other & ~drop))
        for s, idx, drop, at_max in cuts:
            with m.If(drop & s.valid & s.payload.last):
                m.d.sync += drop.eq(0)
            with m.If(take):
                m.d.sync += idx.eq(Mux(last["prod"] if s is prod_in else last["up"], 0, idx + 1))
                with m.If(at_max & ~s.payload.last):
                    m.d.sync += [drop.eq(1), error.eq(1)]

        v1, l1 = Signal(), Signal()
        p1 = Signal(signed(PROD_BITS))
        u1 = Signal(signed(DATA_BITS))
        x = prod_in.payload.data
        if self._act == "relu2":
            g = Mux(x[-1], 0, x[:DATA_BITS - 1])           # max(gate, 0): 15 bits
            m.d.sync += p1.eq(g * g)
        else:
            m.d.sync += p1.eq(x)
        m.d.sync += [v1.eq(take), l1.eq(last["prod"]), u1.eq(up.payload.data)]

        rq_act, rq_hid = self._rq
        act_owner = SimpleNamespace(m=self.act_m, e=self.act_e, bias=Const(0, signed(1)))
        hid_owner = SimpleNamespace(m=self.hid_m, e=self.hid_e, bias=Const(0, signed(1)))
        v2, (a2,), l2, _ = rq_act.elaborate(m, act_owner, v1, [p1], l1)
        u2 = delay(m, u1, rq_act.latency, name="up_dly")
        v3, l3 = Signal(), Signal()
        p3 = Signal(signed(PROD_BITS))
        m.d.sync += [v3.eq(v2), l3.eq(l2), p3.eq(a2 * u2)]
        v4, (h4,), l4, _ = rq_hid.elaborate(m, hid_owner, v3, [p3], l3)

        with m.If((take & (last["prod"] != last["up"])) | prod_err):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        oq.push(v4, data=h4, last=l4)
        return m
