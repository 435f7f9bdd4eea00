"""AXI4 (full) memory masters: the parts the read and the write master share.

* :class:`Burst`, :class:`Resp`: the AXI4 burst-type and response encodings;
  :data:`PAGE_BYTES` (bursts never cross it), :data:`MAX_BURST`,
  :data:`CACHE` (the AxCACHE value the masters drive).
* :func:`read_signature`, :func:`write_signature`: the AXI4 read and write
  channels as seen from the master; on a component member ``m_axi`` the
  Verilog ports are ``m_axi__araddr``, ... (cocotbext-axi:
  ``AxiBus.from_prefix(dut, "m_axi_")``).
* :func:`command_layout`: the command both masters take, ``{addr, beats}``.
* :class:`BurstPlanner`: splits one command into INCR bursts.
* :class:`MasterParams`: the parameters both masters take, checked.
* :func:`stall_timer`: the watchdog behind :attr:`ErrorCode.MEM_TIMEOUT`.

The masters are :class:`trilut.hw.axi_read.AxiReadMaster` and
:class:`trilut.hw.axi_write.AxiWriteMaster`; their error codes are
:class:`trilut.hw.isa.ErrorCode` ``MEM_*`` (one table with the sequencer's).
"""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .isa import ErrorCode
from .rowio import bits_for

__all__ = ["add_planner", "Burst", "Resp", "PAGE_BYTES", "MAX_BURST", "CACHE", "read_signature",
           "write_signature", "command_layout", "BurstPlanner", "MasterParams", "burst_limit",
           "stall_timer", "resp_code"]

#: An INCR burst never crosses a 4 KB boundary (AXI4 A3.4.1).
PAGE_BYTES = 4096
#: Longest INCR burst (AxLEN = 255).
MAX_BURST = 256
#: AxCACHE: normal non-cacheable bufferable (what Zynq HP ports expect).
CACHE = 0b0011


class Burst(enum.Enum, shape=2):
    """AxBURST."""
    FIXED = 0
    INCR = 1
    WRAP = 2


class Resp(enum.Enum, shape=2):
    """RRESP / BRESP."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


def _address_channel(p, addr_bits, id_bits):
    return {f"{p}id": Out(id_bits), f"{p}addr": Out(addr_bits), f"{p}len": Out(8),
            f"{p}size": Out(3), f"{p}burst": Out(Burst), f"{p}cache": Out(4),
            f"{p}prot": Out(3), f"{p}valid": Out(1), f"{p}ready": In(1)}


def read_signature(addr_bits, data_bits, id_bits):
    """AR and R channels, as seen from the master."""
    return wiring.Signature({
        **_address_channel("ar", addr_bits, id_bits),
        "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(Resp), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1)})


def write_signature(addr_bits, data_bits, id_bits):
    """AW, W and B channels, as seen from the master."""
    return wiring.Signature({
        **_address_channel("aw", addr_bits, id_bits),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_bits), "bresp": In(Resp), "bvalid": In(1), "bready": Out(1)})


def command_layout(addr_bits, len_bits):
    """A transfer: ``beats`` (>= 1) data-width words from byte address
    ``addr`` (a multiple of the data width in bytes)."""
    return data.StructLayout({"addr": unsigned(addr_bits), "beats": unsigned(len_bits)})


def _check_params(addr_bits, data_bits, id_bits, len_bits, max_burst, outstanding, timeout):
    check_int("data_bits", data_bits, 32, 512)
    if data_bits & (data_bits - 1):
        raise ValueError(f"data_bits must be a power of two in [32, 512], got {data_bits}")
    check_int("addr_bits", addr_bits, 12, 64)
    check_int("id_bits", id_bits, 1, 16)
    check_int("len_bits", len_bits, 1, 32)
    check_int("max_burst", max_burst, 1, MAX_BURST)
    check_int("outstanding", outstanding, 1, 64)
    check_int("timeout", timeout, 2, 1 << 32)


class MasterParams:
    """The parameters both masters take (read-only properties), checked in
    :meth:`_set_params` (``TypeError`` / ``ValueError`` naming the bad one).

    ``addr_bits`` (12..64), ``data_bits`` (a power of two, 32..512),
    ``id_bits`` (1..16; the masters drive ID 0), ``len_bits`` (width of a
    command's ``beats``), ``max_burst`` (1..256 beats), ``outstanding``
    (bursts in flight, 1..64), ``timeout`` (cycles without progress before
    :attr:`ErrorCode.MEM_TIMEOUT`)."""

    def _set_params(self, **params):
        _check_params(**params)
        self._params = dict(params)

    addr_bits = property(lambda self: self._params["addr_bits"])
    data_bits = property(lambda self: self._params["data_bits"])
    id_bits = property(lambda self: self._params["id_bits"])
    len_bits = property(lambda self: self._params["len_bits"])
    max_burst = property(lambda self: self._params["max_burst"])
    outstanding = property(lambda self: self._params["outstanding"])
    timeout = property(lambda self: self._params["timeout"])


def burst_limit(data_bits, max_burst):
    """Longest burst in beats: ``max_burst``, or fewer when a 4 KB page holds
    fewer beats (512-bit words: 64)."""
    return min(max_burst, PAGE_BYTES * 8 // data_bits)


def address_shift(data_bits):
    """log2 of the bytes per beat (AxSIZE)."""
    return bits_for(data_bits // 8)


def stall_timer(m, waiting, progress, timeout):
    """A watchdog in ``m``: a counter of consecutive cycles with ``waiting``
    high and no ``progress``; returns a signal high once it reaches
    ``timeout`` (cleared by progress or when nothing is waited for)."""
    count = Signal(range(timeout + 1))
    with m.If(progress | ~waiting):
        m.d.sync += count.eq(0)
    with m.Elif(count != timeout):
        m.d.sync += count.eq(count + 1)
    return count == timeout


def resp_code(resp):
    """The error code of an AXI response (NONE for OKAY / EXOKAY)."""
    return Mux(resp == Resp.SLVERR, ErrorCode.MEM_SLVERR,
               Mux(resp == Resp.DECERR, ErrorCode.MEM_DECERR, ErrorCode.NONE))


class BurstPlanner(wiring.Component):
    """Splits commands into AXI4 INCR bursts.

    ``cmd`` (in, :func:`command_layout`): ``beats`` words from byte address
    ``addr``. ``burst`` (out): ``{addr, len, beats, last}``, the byte address,
    AxLEN and length (``beats = len + 1``, registered so that users need no
    adder) of each burst, ``last`` on the command's final burst.
    Each burst is as long as it can be: the command's remaining beats, at most
    ``max_burst``, and never past a :data:`PAGE_BYTES` boundary (so a command
    starting on a page gives ``max_burst``-beat bursts).

    A command with ``beats == 0``, an address that is not a multiple of the
    beat size, or words past the top of the address space is dropped and sets
    ``error`` (sticky, cleared by reset); from
    then on, and while ``halt`` is high, ``cmd.ready`` stays low (a pending
    burst stays valid).

    Latency: the first burst is valid 1 cycle after its command is accepted;
    then one burst per cycle while ``burst.ready`` is high; ``cmd.ready`` is
    high again in the cycle after the final burst was planned. ``cmd.ready``
    and everything on ``burst`` come from registers; backpressure honoured.
    """

    def __init__(self, *, addr_bits=32, data_bits=128, len_bits=20, max_burst=MAX_BURST):
        _check_params(addr_bits, data_bits, 1, len_bits, max_burst, 1, 2)
        self._addr_bits, self._data_bits, self._len_bits = addr_bits, data_bits, len_bits
        self._max_len = burst_limit(data_bits, max_burst)
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_bits, len_bits))),
            "burst": Out(stream.Signature(data.StructLayout({
                "addr": unsigned(addr_bits), "len": unsigned(8), "beats": unsigned(9),
                "last": 1}))),
            "halt": In(1),
            "error": Out(1),
        })

    @property
    def max_len(self):
        """Longest burst, in beats: ``min(max_burst, PAGE_BYTES / beat bytes)``."""
        return self._max_len

    def elaborate(self, platform):
        m = Module()
        shift = address_shift(self._data_bits)
        page_bits = bits_for(PAGE_BYTES) - shift
        addr = Signal(self._addr_bits - shift)          # next burst, in beats
        left = Signal(self._len_bits)                   # beats still to plan
        busy = Signal()
        cmd, burst = self.cmd, self.burst
        m.d.comb += cmd.ready.eq(~busy & ~self.halt & ~self.error)

        with m.If(cmd.valid & cmd.ready):
            past_top = (cmd.payload.addr[shift:] + cmd.payload.beats) > (1 << len(addr))
            bad = (cmd.payload.beats == 0) | (cmd.payload.addr[:shift] != 0) | past_top
            with m.If(bad):
                m.d.sync += self.error.eq(1)
            with m.Else():
                m.d.sync += [addr.eq(cmd.payload.addr[shift:]), left.eq(cmd.payload.beats),
                             busy.eq(1)]

        with m.If(burst.ready):
            m.d.sync += burst.valid.eq(0)
        to_page = Signal(page_bits + 1)
        m.d.comb += to_page.eq((1 << page_bits) - addr[:page_bits])
        length = Signal(range(self._max_len + 1))
        cap = Mux(to_page < self._max_len, to_page, self._max_len)
        m.d.comb += length.eq(Mux(left < cap, left, cap))
        with m.If(busy & (~burst.valid | burst.ready)):
            last = left == length
            m.d.sync += [burst.valid.eq(1), burst.payload.addr.eq(addr << shift),
                         burst.payload.len.eq(length - 1), burst.payload.beats.eq(length),
                         burst.payload.last.eq(last),
                         addr.eq(addr + length), left.eq(left - length)]
            with m.If(last):
                m.d.sync += busy.eq(0)
        return m


def address_stage(m, params, axi, prefix, burst, issue):
    """Drive AR or AW (``prefix`` "ar" / "aw" of ``axi``): ID 0, full-width
    INCR bursts, :data:`CACHE`, no protection; one register stage loaded
    from the planner's ``burst`` when ``issue`` is high (the caller has made
    sure the stage is free), ``valid`` cleared when the slave takes it."""
    def chan(name):
        return getattr(axi, prefix + name)
    m.d.comb += [chan("id").eq(0), chan("size").eq(address_shift(params["data_bits"])),
                 chan("burst").eq(Burst.INCR), chan("cache").eq(CACHE), chan("prot").eq(0)]
    with m.If(chan("ready")):
        m.d.sync += chan("valid").eq(0)
    with m.If(issue):
        m.d.sync += [chan("valid").eq(1), chan("addr").eq(burst.payload.addr),
                     chan("len").eq(burst.payload.len)]


def latch_error(m, code, planner, resp_taken, resp, expired):
    """Set a master's sticky ``code`` from the first error: a refused command
    (``planner.error``: MEM_COMMAND), an error response taken (``resp_taken``
    with ``resp`` not OKAY) or the stall timer's ``expired`` (MEM_TIMEOUT)."""
    with m.If(code == ErrorCode.NONE):
        with m.If(planner.error):
            m.d.sync += code.eq(ErrorCode.MEM_COMMAND)
        with m.Elif(resp_taken & (resp_code(resp) != ErrorCode.NONE)):
            m.d.sync += code.eq(resp_code(resp))
        with m.Elif(expired):
            m.d.sync += code.eq(ErrorCode.MEM_TIMEOUT)


def add_planner(m, params, cmd):
    """A :class:`BurstPlanner` for a master with ``params`` (its checked
    parameters), fed from the master's ``cmd`` stream; returns the planner."""
    m.submodules.planner = planner = BurstPlanner(
        addr_bits=params["addr_bits"], data_bits=params["data_bits"],
        len_bits=params["len_bits"], max_burst=params["max_burst"])
    wiring.connect(m, wiring.flipped(cmd), planner.cmd)
    return planner
