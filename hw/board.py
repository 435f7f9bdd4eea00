"""Board tops: the clock, reset and pins around a UART-attached core.

A *core* is any ``wiring.Component`` whose signature has exactly the UART
contract :data:`UART_CORE_PORTS`: ``uart_rx`` (In 1, idle high; the pin
itself, asynchronous to ``sync``: the core synchronises it, as the UART
receiver of :mod:`trilut.hw.uart` does), ``uart_tx`` (Out 1, idle high) and
``leds`` (Out 8). The accelerator's UART bridge
(:class:`trilut.hw.bridge.UartAccelerator`) is the core the ``trilut build``
flow puts on a board; the board top knows nothing else about it.

:class:`ULX3STop` (Radiona ULX3S, every ECP5 size; amaranth-boards'
``ULX3S_*_Platform``):

* clock: the 25 MHz oscillator (``clk25``, G2) drives one ECP5 ``EHXPLLL``
  whose CLKOP is the core's ``sync`` clock; dividers from
  :func:`ecp5_pll_params` (the settings Project Trellis' ``ecppll`` picks:
  VCO 400-800 MHz, phase-detector input >= 3.125 MHz, the nearest
  achievable 25 MHz * FB / IN). The achieved frequency is
  :attr:`ULX3STop.freq_hz`, and it is handed to the toolchain as a
  ``FREQUENCY NET`` constraint on the PLL output (nextpnr times every
  register in the core against it).
* reset: ``sync`` is held in reset until the PLL reports lock, through
  Amaranth's ``ResetSynchronizer`` (asynchronous assert, release
  synchronised to the PLL clock by two flip-flops). Loss of lock resets the
  core again. Latency from lock to release: 2 ``sync`` cycles.
* UART: the FTDI FT231X's TXD/RXD (``uart`` 0: rx M1 into the FPGA, tx L4
  out of it, 3.3 V LVCMOS), wired straight to the core; RTS/DTR are not
  used (no buffers: the pins stay unconfigured inputs).
* LEDs: ``led`` 0..7 (B2 ... H3) show the core's ``leds`` directly.
* SDRAM clock (``sdram_clock=True``; off by default, the build is then
  unchanged): the PLL's second output CLKOS runs at the core clock shifted
  by :data:`SDRAM_CLOCK_PHASE_DEG`, and an ``ODDRX1F`` clocked by it (D0 = 1,
  D1 = 0) drives the SDRAM's clock pin (``sdram`` 0 ``clk``, F19), as
  LiteX's ULX3S target does for the SDR SDRAM; LiteDRAM's core
  (:mod:`trilut.hw.sdram`) does not drive that pin. The top requests the
  ``sdram`` resource and keeps the other pins in :attr:`ULX3STop.sdram_pins`
  for the SDRAM subsystem; a core with an ``attach_sdram(pins)`` method
  (:class:`trilut.hw.bridge.UartAccelerator` built with a board SDRAM core)
  is handed them before it is elaborated.

Nothing in the top is combinational between pins and core other than the
LED and TX wires; the core is the only logic in ``sync``.
"""
from fractions import Fraction

from amaranth.hdl import (ClockDomain, ClockSignal, Elaboratable, Instance, Module, Shape,
                          Signal)
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["UART_CORE_PORTS", "SDRAM_CLOCK_PHASE_DEG", "check_uart_core", "ecp5_pll_params",
           "pll_phase_params", "ULX3STop", "UartLoopback"]

#: The ULX3S-85F build's default core clock (MHz): ``trilut build``'s board
#: default, and the clock LiteDRAM's controller is generated for unless told.
ULX3S_85F_MHZ = 50.0

#: The board-top contract: port name -> (flow, width) of a UART core.
UART_CORE_PORTS = {"uart_rx": (wiring.Flow.In, 1), "uart_tx": (wiring.Flow.Out, 1),
                   "leds": (wiring.Flow.Out, 8)}

# ECP5 EHXPLLL operating ranges (Lattice TN1263 / DS1044, as ecppll uses them).
_PFD_MIN_HZ, _PFD_MAX_HZ = 3.125e6, 400e6
_VCO_MIN_HZ, _VCO_MAX_HZ = 400e6, 800e6
_OUT_MIN_HZ, _OUT_MAX_HZ = 3.125e6, 400e6
_VCO_MID_HZ = 600e6

#: Phase of the SDRAM clock pin against the core clock (../shared/TOOLCHAIN.md).
SDRAM_CLOCK_PHASE_DEG = 90


def check_uart_core(core):
    """Raise ``TypeError`` naming the problem unless ``core`` is a
    ``wiring.Component`` with exactly the ports of :data:`UART_CORE_PORTS`."""
    if not isinstance(core, wiring.Component):
        raise TypeError(f"core must be an amaranth wiring.Component, not {core!r}")
    members = core.signature.members
    got = {name: (m.flow, Shape.cast(m.shape).width)
           for name, m in members.items() if m.is_port}
    if got != UART_CORE_PORTS or len(got) != len(members):
        want = ", ".join(f"{n} ({f.name} {w})" for n, (f, w) in UART_CORE_PORTS.items())
        have = ", ".join(f"{n} ({m.flow.name} "
                         f"{Shape.cast(m.shape).width if m.is_port else 'interface'})"
                         for n, m in members.items())
        raise TypeError(f"core {type(core).__name__} must have exactly the ports {want}; "
                        f"it has {have}")


def ecp5_pll_params(f_in_hz, f_out_hz):
    """EHXPLLL dividers for ``f_out_hz`` from ``f_in_hz`` (feedback from CLKOP).

    Returns ``dict(clki_div, clkfb_div, clkop_div, clkop_cphase, f_out_hz,
    f_vco_hz, f_pfd_hz)``: the output is ``f_in * clkfb_div / clki_div`` and
    the VCO ``f_out * clkop_div``. Among all legal settings the one closest to
    the request wins; ties go to the VCO frequency nearest the middle of its
    range (600 MHz), and the output phase register is ``(clkop_div - 1) // 2``:
    the choices ``ecppll`` makes (``tests/test_build.py`` compares the two). Raises ``ValueError`` for a request outside
    3.125-400 MHz.
    """
    for name, value in (("f_in_hz", f_in_hz), ("f_out_hz", f_out_hz)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number, not {value!r}")
        if not _OUT_MIN_HZ <= value <= _OUT_MAX_HZ:
            raise ValueError(f"{name} must be within 3.125-400 MHz for an ECP5 PLL, "
                             f"not {value / 1e6:g} MHz")
    best = None
    for clki_div in range(1, 129):
        f_pfd = Fraction(f_in_hz) / clki_div
        if not _PFD_MIN_HZ <= f_pfd <= _PFD_MAX_HZ:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            if not _OUT_MIN_HZ <= f_out <= _OUT_MAX_HZ:
                continue
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if f_vco < _VCO_MIN_HZ:
                    continue
                if f_vco > _VCO_MAX_HZ:
                    break
                key = (abs(f_out - Fraction(f_out_hz)), abs(f_vco - _VCO_MID_HZ))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f_out, f_vco, f_pfd)
    if best is None:  # pragma: no cover - every request in range has a setting
        raise ValueError(f"no EHXPLLL setting for {f_out_hz / 1e6:g} MHz")
    _, clki_div, clkfb_div, clkop_div, f_out, f_vco, f_pfd = best
    return dict(clki_div=clki_div, clkfb_div=clkfb_div, clkop_div=clkop_div,
                clkop_cphase=(clkop_div - 1) // 2, f_out_hz=float(f_out), f_vco_hz=float(f_vco),
                f_pfd_hz=float(f_pfd))


def pll_phase_params(pll, phase_deg):
    """EHXPLLL settings of a secondary output at CLKOP's frequency, shifted by
    ``phase_deg`` (0-360) against it: ``dict(div, cphase, fphase)``. The
    phase steps are eighths of a VCO cycle: ``phase_deg / 360 * div * 8`` of
    them, counted from CLKOP's own ``clkop_cphase``."""
    if not isinstance(phase_deg, (int, float)) or isinstance(phase_deg, bool):
        raise TypeError(f"phase_deg must be a number, not {phase_deg!r}")
    if not 0 <= phase_deg < 360:
        raise ValueError(f"phase_deg must be within 0..360, not {phase_deg}")
    div = pll["clkop_div"]
    eighths = round(phase_deg * div * 8 / 360)
    return dict(div=div, cphase=pll["clkop_cphase"] + (eighths >> 3), fphase=eighths & 7)


class ULX3STop(Elaboratable):
    """ULX3S board top around a UART ``core`` (see the module docstring).

    ``core``: a component with the :data:`UART_CORE_PORTS` contract (checked
    here). ``freq_mhz``: the requested core clock (3.125-400 MHz; the PLL's
    nearest achievable frequency is used, :attr:`freq_hz`). ``sdram_clock``:
    drive the SDRAM clock pin (module docstring; default off).
    """

    def __init__(self, core, *, freq_mhz, sdram_clock=False):
        check_uart_core(core)
        if not isinstance(sdram_clock, bool):
            raise TypeError(f"sdram_clock must be a bool, not {sdram_clock!r}")
        self._sdram_clock = sdram_clock
        self.sdram_pins = None
        if not isinstance(freq_mhz, (int, float)) or isinstance(freq_mhz, bool):
            raise TypeError(f"freq_mhz must be a number, not {freq_mhz!r}")
        self._core = core
        self._pll = ecp5_pll_params(25e6, freq_mhz * 1e6)

    core = property(lambda self: self._core)
    pll = property(lambda self: dict(self._pll), doc="the EHXPLLL divider settings")
    freq_hz = property(lambda self: self._pll["f_out_hz"], doc="achieved core clock")

    def elaborate(self, platform):
        m = Module()
        p = self._pll
        clk25 = platform.request("clk25", 0, dir="-")
        m.submodules.clk25_buf = clk25_buf = io.Buffer("i", clk25)

        clk_pll = Signal()
        locked = Signal()
        sdram = {}
        if self._sdram_clock:
            ps = pll_phase_params(p, SDRAM_CLOCK_PHASE_DEG)
            clk_sdram = Signal()
            sdram = dict(p_CLKOS_ENABLE="ENABLED", p_CLKOS_DIV=ps["div"],
                         p_CLKOS_CPHASE=ps["cphase"], p_CLKOS_FPHASE=ps["fphase"],
                         a_FREQUENCY_PIN_CLKOS=f"{p['f_out_hz'] / 1e6:g}", o_CLKOS=clk_sdram)
            self.sdram_pins = platform.request("sdram", 0, dir="-")
            attach = getattr(self._core, "attach_sdram", None)
            if attach is not None:
                attach(self.sdram_pins)
            m.submodules.sdram_clk = Instance("ODDRX1F", i_SCLK=clk_sdram, i_RST=0, i_D0=1,
                                              i_D1=0, o_Q=self.sdram_pins.clk.io)
        m.submodules.pll = Instance(
            "EHXPLLL",
            # Loop-filter settings every ecppll-generated EHXPLLL carries.
            a_FREQUENCY_PIN_CLKI="25", a_FREQUENCY_PIN_CLKOP=f"{p['f_out_hz'] / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p["clki_div"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["clkop_div"],
            p_CLKOP_CPHASE=p["clkop_cphase"], p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["clkfb_div"],
            i_RST=0, i_STDBY=0, i_CLKI=clk25_buf.i, o_CLKOP=clk_pll, i_CLKFB=clk_pll,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked, **sdram,
        )
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk_pll)
        platform.add_clock_constraint(clk_pll, p["f_out_hz"])
        m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")

        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-", "rts": "-", "dtr": "-"})
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.core = core = self._core
        m.d.comb += [core.uart_rx.eq(rx_buf.i), tx_buf.o.eq(core.uart_tx)]
        for i in range(8):
            m.submodules[f"led_buf{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(core.leds[i])
        return m


class UartLoopback(wiring.Component):
    """The smallest UART core: ``uart_rx`` through a two-flip-flop
    synchroniser, then ``uart_tx`` follows it (latency 3 cycles, any baud
    rate); ``leds`` count falling edges on RX (start bits and zero bits) so a
    terminal shows activity. For checking a board's clock, pins and flow
    without the accelerator."""

    def __init__(self):
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
                          "leds": Out(8)})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        prev = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.uart_rx, rx, init=1)
        m.d.sync += [prev.eq(rx), self.uart_tx.eq(rx)]
        with m.If(prev & ~rx):
            m.d.sync += self.leds.eq(self.leds + 1)
        return m
