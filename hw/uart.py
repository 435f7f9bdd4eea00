"""UART physical layer: 8N1 receiver and transmitter with byte streams.

Both take ``clk_hz`` and ``baud`` and use the integer bit period
``divisor = round(clk_hz / baud)`` clock cycles (see :func:`uart_divisor`,
which refuses a divisor below :data:`MIN_DIVISOR` or a baud-rate error above
2 %). Line idle is high; a byte is a start bit (0), eight data bits LSB
first and a stop bit (1).

:func:`ft231x_rates` and :func:`link_baud` choose a board's link rate: the
fastest rate the FTDI FT231X (the ULX3S's USB UART) generates whose
mismatch with this PHY's integer divisor at the core clock stays within
:data:`LINK_RATE_TOLERANCE`.
"""
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int

__all__ = ["MIN_DIVISOR", "LINK_RATE_TOLERANCE", "uart_divisor", "baud_error", "ft231x_rates",
           "link_baud", "UartRx", "UartTx"]

#: Smallest bit period in clock cycles: the receiver samples each bit in its
#: middle, after a two-flop synchronizer.
MIN_DIVISOR = 4


def uart_divisor(clk_hz, baud):
    """Clock cycles per bit for ``clk_hz`` and ``baud`` (checked)."""
    clk_hz = check_int("clk_hz", clk_hz, 1)
    baud = check_int("baud", baud, 1)
    divisor = (clk_hz + baud // 2) // baud
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud} is too fast for clk_hz {clk_hz}: divisor {divisor} < "
                         f"{MIN_DIVISOR} clock cycles per bit")
    if abs(clk_hz / divisor - baud) > 0.02 * baud:
        raise ValueError(f"baud {baud} is not within 2% of clk_hz / {divisor} = "
                         f"{clk_hz / divisor:.0f}")
    return divisor


def baud_error(clk_hz, baud):
    """Relative error of this PHY's bit rate ``clk_hz / uart_divisor(...)``
    against ``baud`` (signed: positive is fast)."""
    return clk_hz / uart_divisor(clk_hz, baud) / baud - 1


#: FT231X: the baud generator divides a 3 MHz reference by n + a sub-integer
#: step (FTDI AN232B-05); divisors 0 and 1 are special cases giving 3 and
#: 2 Mbaud, and no divisor lies between 1 and 2. Of the eight sub-integer steps
#: only these four are generated correctly by the FT230X/FT231X under Linux's
#: ftdi_sio (kernel bug 210351: .375, .625, .75 and .875 come out as others).
FT231X_REF_HZ = 3_000_000
_FT231X_STEPS = (0, 0.125, 0.25, 0.5)

#: Largest rate mismatch :func:`link_baud` accepts between the FT231X's rate
#: and this PHY's: FTDI allows +-3 % in all for a link without errors; half of
#: it is left to the FT231X's own clock and to the 1-cycle sampling jitter.
LINK_RATE_TOLERANCE = 0.015


def ft231x_rates(min_baud=9600):
    """FT231X baud rates from the fastest down to ``min_baud``."""
    rates = [FT231X_REF_HZ, FT231X_REF_HZ * 2 // 3]
    n = 2
    while FT231X_REF_HZ / n >= min_baud:
        rates += [FT231X_REF_HZ / (n + f) for f in _FT231X_STEPS
                  if FT231X_REF_HZ / (n + f) >= min_baud]
        n += 1
    return [int(round(r)) if abs(r - round(r)) < 1e-9 else r for r in rates]


def link_baud(clk_hz, tolerance=LINK_RATE_TOLERANCE):
    """The fastest integer FT231X rate this PHY runs at from ``clk_hz`` with
    ``|baud_error| <= tolerance`` (3 Mbaud at 100 MHz: divisor 33, +1.0 %;
    at 50 MHz 3 Mbaud would be divisor 17, -2.0 %, so 2 Mbaud, divisor 25,
    exact). Raises ``ValueError`` when no rate fits."""
    clk_hz = check_int("clk_hz", clk_hz, 1)
    for baud in ft231x_rates():
        if baud != int(baud):
            continue
        try:
            if abs(baud_error(clk_hz, baud)) <= tolerance:
                return baud
        except ValueError:
            continue
    raise ValueError(f"no FT231X rate within {tolerance:.1%} of this UART's at clk_hz {clk_hz}")


class _Uart(wiring.Component):
    def __init__(self, clk_hz, baud, members):
        self._divisor = uart_divisor(clk_hz, baud)
        self._clk_hz, self._baud = clk_hz, baud
        super().__init__(members)

    divisor = property(lambda self: self._divisor, doc="clock cycles per bit")
    clk_hz = property(lambda self: self._clk_hz)
    baud = property(lambda self: self._baud)


class UartRx(_Uart):
    """8N1 receiver.

    ``rx`` passes a two-flop synchronizer (initial value 1, idle); a falling
    edge starts a byte, which is confirmed low half a bit later (else a
    glitch, ignored) and sampled in the middle of every following bit. A byte
    whose stop bit is 0 is dropped and pulses ``framing_error`` for one
    cycle; the receiver then waits for the line to return high.

    ``out`` (8-bit stream): a byte is valid from the middle of its stop bit
    until taken; the receiver cannot be stalled (a UART has no flow
    control): a byte still untaken when the next one completes is replaced
    and ``overrun`` pulses. Latency: about 10.5 bit periods + 2 cycles from
    the start edge to ``out.valid``. Throughput: one byte per 10 bit periods.
    """

    def __init__(self, clk_hz, baud):
        super().__init__(clk_hz, baud, {
            "rx": In(1, init=1),
            "out": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"          # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.out.payload.eq(shreg), self.out.valid.eq(1),
                                     self.overrun.eq(self.out.valid & ~self.out.ready)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(_Uart):
    """8N1 transmitter.

    ``inp`` (8-bit stream) is ready while the transmitter is idle; a taken
    byte goes out on ``tx`` starting the next cycle, 10 bit periods long, and
    the next byte is taken on the cycle after its stop bit ends. ``busy``
    is high while a byte is being sent. ``tx`` idles high.
    """

    def __init__(self, clk_hz, baud):
        super().__init__(clk_hz, baud, {
            "inp": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=0x3FF)
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(left != 0),
                     self.inp.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.inp.valid):
                m.d.sync += [shreg.eq(Cat(0, self.inp.payload, 1)), left.eq(10),
                             timer.eq(d - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1), timer.eq(d - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
