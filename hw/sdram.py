"""The ULX3S SDRAM: a generated LiteDRAM core, initialised by our own logic,
behind simple command and data streams.

:class:`LiteDRAMCore` describes one generated core (``trilut.gen.litedram``
generates it and reads the register map out of its output); :class:`SDRAMInit`
runs the SDRAM power-up sequence over the core's ``wb_ctrl`` bus (there is no
CPU); :class:`SDRAM` instantiates the core and adapts its native user port to
streams of whole bursts. ``docs/memory.md`` ("ULX3S SDRAM") has the
measured figures.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["LiteDRAMCore", "SDRAMInit", "SDRAM", "INIT_WAIT_S", "COMMAND_WAIT_S", "WB_TIMEOUT",
           "init_program", "RESOURCE_PINS"]

#: Power-up wait with CKE high before the first command (SDR SDRAM data
#: sheets: >= 100-200 us; MT48LC16M16 asks 100 us, LiteX waits ~200 us).
INIT_WAIT_S = 200e-6
#: Wait after each initialisation command (covers tRP, tRFC and tMRD of
#: the MT48LC16M16, the longest being tRFC = 66 ns).
COMMAND_WAIT_S = 200e-9
#: Cycles without an acknowledge before a ``wb_ctrl`` write counts as failed.
WB_TIMEOUT = 255
#: Power-up wait of the ``--sim`` core's wrapper (cycles): LiteDRAM's SDRAM
#: model needs none; a board's core keeps the 200 us of ``INIT_WAIT_S``.
SIM_INIT_WAIT = 64
#: Pins of the board variant: name -> (width, direction seen by the core).
SDRAM_PINS = {"a": (13, "o"), "ba": (2, "o"), "cs_n": (1, "o"), "cke": (1, "o"),
              "ras_n": (1, "o"), "cas_n": (1, "o"), "we_n": (1, "o"), "dm": (2, "o"),
              "dq": (16, "i")}
#: :data:`SDRAM_PINS` name -> subsignal of amaranth-boards' ``SDRAMResource``.
RESOURCE_PINS = {"a": "a", "ba": "ba", "cs_n": "cs", "cke": "clk_en", "ras_n": "ras",
                 "cas_n": "cas", "we_n": "we", "dm": "dqm", "dq": "dq"}


@dataclass(frozen=True)
class LiteDRAMCore:
    """One generated LiteDRAM core, as far as the wrapper needs it.

    ``name``: the Verilog module; ``verilog``: its file; ``sim``: the
    ``--sim`` variant (LiteDRAM's SDRAM model inside, no SDRAM pins, no
    reset input); ``sys_clk_hz``: the clock the controller's timings were
    computed for; ``addr_bits``/``data_bits``: the native port's word
    address and data widths; ``csr``: register name -> byte address on
    ``wb_ctrl``; ``dfii``: the ``DFII_CONTROL_*``/``DFII_COMMAND_*`` bit
    values (names without the ``DFII_`` prefix); ``cas_latency``.
    """
    name: str
    verilog: Path
    sim: bool
    sys_clk_hz: float
    addr_bits: int
    data_bits: int
    csr: Mapping[str, int] = field(default_factory=dict)
    dfii: Mapping[str, int] = field(default_factory=dict)
    cas_latency: int = 2

    def __post_init__(self):
        object.__setattr__(self, "verilog", Path(self.verilog))   # JSON gives a str

    @property
    def words(self):
        """Words of ``data_bits`` in the memory."""
        return 1 << self.addr_bits


def init_program(core, wait_cycles):
    """The initialisation sequence as ``wb_ctrl`` writes: a list of
    ``(word_address, value, cycles_to_wait_after)``.

    CKE on under software control, wait ``wait_cycles``; precharge all, two
    auto-refreshes, load mode register (CAS latency of the core, burst 1),
    each issued through DFI phase 0; then hardware control and
    ``init_done``. Register addresses and bits come from ``core``."""
    csr, bit = core.csr, core.dfii
    cmd_wait = max(1, math.ceil(COMMAND_WAIT_S * core.sys_clk_hz))
    sw = bit["CONTROL_CKE"] | bit["CONTROL_ODT"] | bit["CONTROL_RESET_N"]
    cs, we, cas, ras = (bit[f"COMMAND_{n}"] for n in ("CS", "WE", "CAS", "RAS"))
    prog = [("sdram_dfii_control", sw, wait_cycles)]
    for address, command in ((0x400, ras | we | cs),            # precharge all (A10)
                             (0, ras | cas | cs), (0, ras | cas | cs),   # auto-refresh x2
                             (core.cas_latency << 4, ras | cas | we | cs)):  # mode register
        prog += [("sdram_dfii_pi0_address", address, 0), ("sdram_dfii_pi0_baddress", 0, 0),
                 ("sdram_dfii_pi0_command", command, 0),
                 ("sdram_dfii_pi0_command_issue", 1, cmd_wait)]
    prog += [("sdram_dfii_control", sw | bit["CONTROL_SEL"], 0), ("ddrctrl_init_done", 1, 0)]
    return [(csr[name] >> 2, value, wait) for name, value, wait in prog]


def _wishbone_signature(addr_bits=30):
    return wiring.Signature({
        "adr": Out(addr_bits), "dat_w": Out(32), "sel": Out(4), "cyc": Out(1), "stb": Out(1),
        "we": Out(1), "dat_r": In(32), "ack": In(1), "err": In(1)})


class SDRAMInit(wiring.Component):
    """Runs :func:`init_program` once after reset over a Wishbone master.

    Each write holds ``cyc``/``stb``/``we`` until ``ack``; then the step's
    wait. ``done`` rises when the last write (``init_done`` of the core) is
    acknowledged and stays high. ``error`` (sticky until reset) rises if a
    write is answered with ``err`` or not acknowledged within
    :data:`WB_TIMEOUT` cycles; the sequence stops there, ``done`` stays low.
    Latency: the sum of the waits plus a few cycles per write.
    """

    def __init__(self, program):
        if not program:
            raise ValueError("program must hold at least one write")
        self._program = tuple(program)
        self._max_wait = max(w for _, _, w in self._program)
        super().__init__({"bus": Out(_wishbone_signature()), "done": Out(1), "error": Out(1)})

    program = property(lambda self: self._program)

    def elaborate(self, platform):
        m = Module()
        n = len(self._program)
        step = Signal(range(n + 1))
        wait = Signal(range(self._max_wait + 1))
        timer = Signal(range(WB_TIMEOUT + 1))
        value, pause = Signal(32), Signal.like(wait)
        with m.Switch(step):
            for i, (adr, val, w) in enumerate(self._program):
                with m.Case(i):
                    m.d.comb += [self.bus.adr.eq(adr), value.eq(val), pause.eq(w)]
        m.d.comb += [self.bus.dat_w.eq(value), self.bus.sel.eq(0xF), self.bus.we.eq(1)]
        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [self.bus.cyc.eq(1), self.bus.stb.eq(1)]
                m.d.sync += timer.eq(timer + 1)
                with m.If(self.bus.err | (~self.bus.ack & (timer == WB_TIMEOUT))):
                    m.d.sync += self.error.eq(1)
                    m.next = "STOPPED"
                with m.Elif(self.bus.ack):
                    m.d.sync += [wait.eq(pause), step.eq(step + 1), timer.eq(0)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Elif(step == n):
                    m.d.sync += self.done.eq(1)
                    m.next = "STOPPED"
                with m.Else():
                    m.next = "WRITE"
            with m.State("STOPPED"):
                pass
        return m


class SDRAM(wiring.Component):
    """A LiteDRAM core behind burst streams.

    Parameters: ``core`` (:class:`LiteDRAMCore`); ``init_wait_cycles``: the
    power-up wait, by default ``ceil(INIT_WAIT_S * core.sys_clk_hz)`` (10,000
    at 50 MHz); only a simulation of the ``--sim`` core (whose model needs
    no wait) should pass a smaller value; ``max_burst``: the longest command
    in words (a power of two, 2-4096; default 256); ``fifo_depth``: the read
    and write buffers in words (>= 2; default 32: reads stream at full rate
    while the round trip through the controller stays under it).

    Ports (all in ``sync``, the core's clock):

    * ``read_cmd`` (in): ``{addr, len}``: read ``len + 1`` words from word
      address ``addr`` up (``len`` counts like AXI's: 0 is one word);
      addresses wrap at the end of the memory.
    * ``read_data`` (out): ``{data, last}``, the words in command order;
      ``last`` marks a command's final word. Backpressure is honoured: a
      read is issued to the controller only when the read buffer has room
      for its word.
    * ``write_cmd`` (in) ``{addr, len}`` and ``write_data`` (in) ``{data}``:
      the command's ``len + 1`` words, in order, from ``write_data``; a word
      is handed to the controller only once it is buffered, so idle gaps
      on ``write_data`` never stall the controller on missing data.
    * ``init_done``/``init_error`` (out): :class:`SDRAMInit`'s ``done`` /
      ``error`` (or the core's own ``init_error``). No command is accepted
      before ``init_done``.
    * board variant only: the SDRAM pins ``sdram_a`` ... ``sdram_dq``
      (:data:`SDRAM_PINS`; ``sdram_dq`` is an input because LiteDRAM
      declares it so, its tristate buffers being inside the core).
      Alternatively a board top sets :attr:`pins` (an amaranth-boards
      ``sdram`` resource requested with ``dir="-"``) before elaboration:
      the core then drives the pins' ``io`` directly (names by
      :data:`RESOURCE_PINS`) and the ``sdram_*`` members stay unconnected.

    Commands are executed one at a time in acceptance order, alternating
    between ``read_cmd`` and ``write_cmd`` when both wait; a read issued after
    a write sees that write's data. One word per cycle at most (measured:
    0.96 sequential reads, 0.95 writes; refresh and row changes cost the
    rest); a lone read's word is taken 14 cycles after its command is
    presented on an idle controller (``docs/memory.md``). Tested on the
    ``--sim`` core at 50 MHz: bursts of 1-256 words anywhere in the 16 M
    words, 30 % idle gaps and backpressure.
    """

    def __init__(self, core, *, init_wait_cycles=None, max_burst=256, fifo_depth=32):
        if not isinstance(core, LiteDRAMCore):
            raise TypeError(f"core must be a LiteDRAMCore, not {core!r}")
        if init_wait_cycles is None:
            init_wait_cycles = math.ceil(INIT_WAIT_S * core.sys_clk_hz)
        for name, value, lo, hi in (("init_wait_cycles", init_wait_cycles, 0, 1 << 24),
                                    ("max_burst", max_burst, 2, 4096),
                                    ("fifo_depth", fifo_depth, 2, 4096)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be within {lo}..{hi}, not {value}")
        if max_burst & (max_burst - 1):
            raise ValueError(f"max_burst must be a power of two, not {max_burst}")
        self._core, self._max_burst, self._fifo_depth = core, max_burst, fifo_depth
        #: Board pins the core drives directly (set by a board top), or None.
        self.pins = None
        self._program = init_program(core, init_wait_cycles)
        cmd = data.StructLayout({"addr": core.addr_bits, "len": (max_burst - 1).bit_length()})
        members = {
            "read_cmd": In(stream.Signature(cmd)),
            "read_data": Out(stream.Signature(data.StructLayout({"data": core.data_bits,
                                                                  "last": 1}))),
            "write_cmd": In(stream.Signature(cmd)),
            "write_data": In(stream.Signature(data.StructLayout({"data": core.data_bits}))),
            "init_done": Out(1), "init_error": Out(1)}
        if not core.sim:
            members.update({f"sdram_{name}": (Out if d == "o" else In)(width)
                            for name, (width, d) in SDRAM_PINS.items()})
        super().__init__(members)

    core = property(lambda self: self._core)
    max_burst = property(lambda self: self._max_burst)
    fifo_depth = property(lambda self: self._fifo_depth)
    init_wait_cycles = property(lambda self: self._program[0][2])

    def command(self, addr, words):
        """The ``read_cmd``/``write_cmd`` payload for ``words`` words from
        word address ``addr``; ``ValueError`` for a burst longer than
        ``max_burst`` or one that runs past the end of the memory."""
        if not 1 <= words <= self._max_burst:
            raise ValueError(f"words must be within 1..{self._max_burst}, not {words}")
        if not 0 <= addr or addr + words > self._core.words:
            raise ValueError(f"words {addr}..{addr + words - 1} are outside the memory "
                             f"(0..{self._core.words - 1})")
        return {"addr": addr, "len": words - 1}

    def elaborate(self, platform):
        m = Module()
        core, depth = self._core, self._fifo_depth
        m.submodules.init = init = SDRAMInit(self._program)
        m.submodules.wfifo = wfifo = SyncFIFOBuffered(width=core.data_bits, depth=depth)
        m.submodules.rfifo = rfifo = SyncFIFOBuffered(width=core.data_bits + 1, depth=depth)
        m.submodules.tags = tags = SyncFIFO(width=1, depth=depth)   # `last` of reads in flight

        # LiteDRAM's native user port: name -> (direction seen by the core, width).
        native = {"cmd_valid": ("i", 1), "cmd_ready": ("o", 1), "cmd_we": ("i", 1),
                  "cmd_addr": ("i", core.addr_bits), "wdata_valid": ("i", 1),
                  "wdata_ready": ("o", 1), "wdata_data": ("i", core.data_bits),
                  "rdata_valid": ("o", 1), "rdata_data": ("o", core.data_bits)}
        n = {k: Signal(w, name=f"native_{k}") for k, (_, w) in native.items()}
        core_error = Signal()
        ports = {f"{d}_user_port_native_{k}": n[k] for k, (d, _) in native.items()}
        ports.update(
            i_clk=ClockSignal(), o_init_done=Signal(), o_init_error=core_error,
            i_user_port_native_rdata_ready=1,
            i_user_port_native_wdata_we=(1 << (core.data_bits // 8)) - 1,   # all byte lanes
            o_user_clk=Signal(), o_user_rst=Signal(),
            i_wb_ctrl_adr=init.bus.adr, i_wb_ctrl_dat_w=init.bus.dat_w,
            i_wb_ctrl_sel=init.bus.sel, i_wb_ctrl_cyc=init.bus.cyc, i_wb_ctrl_stb=init.bus.stb,
            i_wb_ctrl_we=init.bus.we, i_wb_ctrl_cti=0, i_wb_ctrl_bte=0,
            o_wb_ctrl_dat_r=init.bus.dat_r, o_wb_ctrl_ack=init.bus.ack,
            o_wb_ctrl_err=init.bus.err)
        if core.sim:
            ports["i_sim_trace"] = 0
        else:
            ports["i_rst"] = ResetSignal()
            if self.pins is None:
                pins = {name: getattr(self, f"sdram_{name}") for name in SDRAM_PINS}
            else:
                pins = {name: getattr(self.pins, RESOURCE_PINS[name]).io for name in SDRAM_PINS}
            ports.update({f"{d}_sdram_{name}": pins[name] for name, (_, d) in SDRAM_PINS.items()})
        m.submodules.core = Instance(core.name, **ports)
        ready = Signal()
        m.d.comb += [ready.eq(init.done & ~self.init_error), self.init_done.eq(init.done),
                     self.init_error.eq(init.error | core_error)]

        # Write data: buffered, handed over whenever the controller asks.
        m.d.comb += [wfifo.w_data.eq(self.write_data.payload.data),
                     wfifo.w_en.eq(self.write_data.valid), self.write_data.ready.eq(wfifo.w_rdy),
                     n["wdata_valid"].eq(wfifo.r_rdy), n["wdata_data"].eq(wfifo.r_data),
                     wfifo.r_en.eq(n["wdata_ready"])]
        # Read data: tagged with `last` in issue order, buffered for the sink.
        m.d.comb += [rfifo.w_data.eq(n["rdata_data"] | (tags.r_data << core.data_bits)),
                     rfifo.w_en.eq(n["rdata_valid"]), tags.r_en.eq(n["rdata_valid"]),
                     self.read_data.valid.eq(rfifo.r_rdy),
                     self.read_data.payload.data.eq(rfifo.r_data[:core.data_bits]),
                     self.read_data.payload.last.eq(rfifo.r_data[core.data_bits]),
                     rfifo.r_en.eq(self.read_data.ready)]

        # The command in progress: `left` words from `addr`.
        addr = Signal(core.addr_bits)
        left = Signal(range(self._max_burst + 1))
        is_write, prefer_write = Signal(), Signal()
        w_pending = Signal(range(depth + 1))     # write commands whose word is still buffered
        r_reserved = Signal(range(depth + 1))    # reads in flight + words in the read buffer
        can_issue = Signal()
        m.d.comb += [
            can_issue.eq(Mux(is_write, wfifo.level > w_pending, r_reserved < depth)),
            n["cmd_valid"].eq((left != 0) & can_issue),
            n["cmd_we"].eq(is_write), n["cmd_addr"].eq(addr)]
        issued = n["cmd_valid"] & n["cmd_ready"]
        m.d.comb += [tags.w_en.eq(issued & ~is_write), tags.w_data.eq(left == 1)]
        popped_w = n["wdata_valid"] & n["wdata_ready"]
        m.d.sync += w_pending.eq(w_pending + (issued & is_write) - popped_w)
        m.d.sync += r_reserved.eq(r_reserved + (issued & ~is_write)
                                  - (self.read_data.valid & self.read_data.ready))
        with m.If(issued):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]

        # A new command is taken when the current one issues its last word.
        free = ready & ((left == 0) | (issued & (left == 1)))
        take_w = free & self.write_cmd.valid & (prefer_write | ~self.read_cmd.valid)
        take_r = free & self.read_cmd.valid & ~take_w
        m.d.comb += [self.write_cmd.ready.eq(take_w), self.read_cmd.ready.eq(take_r)]
        for take, cmd, write in ((take_w, self.write_cmd, 1), (take_r, self.read_cmd, 0)):
            with m.If(take):
                m.d.sync += [addr.eq(cmd.payload.addr), left.eq(cmd.payload.len + 1),
                             is_write.eq(write), prefer_write.eq(1 - write)]
        return m
