"""Double-buffered weight store between a weight input stream and a
ternary engine's ``wgt`` port.

The engines (:mod:`trilut.hw.matmul`) are row-stationary: for every
activation row they consume the layer's whole weight stream (``NB * KB``
``wgt`` beats, output block outer, k-block inner). Without a store the host
sends those beats once per row. :class:`WeightStore` takes one pass's beats
once, keeps them in block RAM and replays them ``rows`` times, while the next
pass's beats fill the other buffer.

Streams (Amaranth ``lib.stream``; payloads are struct layouts):

* ``load`` (in): ``{codes, last}``; ``codes`` is the engine's codes layout,
  ``last`` marks the final beat of one pass's weights (AXI4-Stream
  ``tlast``). The beats of a pass are the engine's ``wgt`` beats of one row
  in order (:meth:`WeightStore.load_beats`).
* ``play`` (in): one beat per pass, ``{k_blocks, n_blocks, rows, cont}``
  (:meth:`WeightStore.play_command`): replay the oldest loaded buffer
  ``rows`` times, then release it. ``cont`` (decode, see below) leaves
  ``last_n`` clear on every beat of the command.
* ``wgt`` (out): the engine's ``wgt`` layout ``{codes, last_k, last_n}``;
  ``last_k`` on every ``k_blocks``-th beat, ``last_n`` on each row's final
  beat (unless ``cont``). Connect with ``wiring.connect(m, store.wgt,
  engine.wgt)``.

Buffers: two of ``depth`` beats, the halves of one simple dual-port memory
of ``2 * depth`` words x ``len(codes)`` bits when ``2 * depth`` <= 512 (a
DP16KD's words at its widest: such a buffer would half fill its blocks, so
two share them; ``shared``), else a memory of ``depth`` words each.
The accelerator sizes ``depth`` with :meth:`WeightStore.depth_for` (``ceil(
max_k / k_block) * ceil(max_n / lanes)``). A pass fills the free buffer
(``load.ready`` is high while one is free, so the next pass loads during the
current replay); passes are replayed in load order.

Throughput: ``load`` takes one beat per cycle while a buffer is free; ``wgt``
gives one beat per cycle while the engine is ready, with no bubble between
rows or passes as long as the next pass is loaded and its ``play`` beat has
arrived by the time the current pass ends (a one-deep command register holds
it). With ``rows = 1`` a pass of P beats loads in P cycles while the
previous one replays in P cycles, so even then the stream does not stall
when ``load`` delivers one beat per cycle.

Latency (no stalls): the first ``wgt`` beat of a pass is valid 5 cycles
after its final ``load`` beat is accepted (when its ``play`` beat came
earlier; 6 for a single-beat pass, see below), 5 cycles after its ``play``
beat is accepted when the store was idle, or right behind the previous
pass's last beat.

Handshake: every stream honours backpressure. ``load.ready`` and
``play.ready`` depend on registers only (a free buffer; an empty command
register), and the whole ``wgt`` stream (valid and payload) comes from an
output queue (a FIFO of 8 beats): no ready depends combinationally on
``wgt.ready``. The replay pipeline (memory read, memory output, a register)
never stalls: a beat is issued only against a free queue entry (credits),
so ``wgt.ready`` reaches neither the memory (read enable always on) nor the
replay counters. Both memory addresses and the write enable come straight
from registers. The write port (address, data, enable) is a register stage
behind the take, so ``load.valid`` reaches no block RAM either; a beat is
written the cycle after it is accepted. A buffer is marked full as its
final beat is accepted (the replay reads word 0 first, while only the
final word's write is pending); a single-beat pass is marked full one cycle
later, so that the replay's first read does not meet its pending write.

Errors (sticky, cleared by reset; ``error`` is their OR):

* ``overflow``: a pass longer than ``depth`` beats. Its first ``depth``
  beats are kept, the rest are dropped up to and including ``last``, which
  still closes the buffer: a ``play`` of ``depth`` beats then replays the
  kept ones, and the store carries on with the next pass.
* ``mismatch``: a ``play`` command whose ``k_blocks * n_blocks`` differs from
  the number of beats loaded into its buffer, or with a zero field. The
  replay still has the command's shape (``rows`` rows of ``n_blocks *
  k_blocks`` beats, ``last_k`` / ``last_n`` where the command puts them; a
  zero field counts as 1), so nothing downstream hangs; the codes wrap round
  the loaded beats (beat j of a row is loaded beat ``j mod loaded``), i.e.
  the results are meaningless and the flag says so.

Decode (M = 1): every weight beat is used once, so nothing needs storing for
reuse; the store then degenerates to a FIFO of whole chunks. The sequencer
splits the weight matrix along output blocks into chunks of at most
``depth`` beats (any number of whole output blocks), loads each chunk as a
pass and plays it with ``rows = 1`` and ``cont = 1`` except the final chunk.
The engine sees one uninterrupted row of ``wgt`` beats (``last_n`` only on
the final chunk's last beat), and the next chunk streams in from DRAM while
the current one plays (``2 * depth`` beats of buffering). A chunk can only
start loading when the one before the current chunk is released, so when
``load`` delivers one beat per cycle, each chunk longer than the one before
it costs the difference in cycles: :meth:`WeightStore.decode_passes` makes
the chunks of a row equal to within one output block (larger first), so at
most ``k_blocks`` cycles are lost per row.

Widths: ``k_blocks`` and ``n_blocks`` are ``bits(depth)`` wide, ``rows``
``bits(max_rows)``; a command may say up to ``2**bits - 1`` rows.

Tested (Verilator, cocotb 2; random idle gaps on ``load`` and ``play``,
random backpressure on ``wgt``): the TLMM codes of group 3, tables 2,
lanes 4 (40 bits, depth 24: max_k 36, max_n 16) and the direct engine's codes
of group 2, tables 2, lanes 2 (16 bits, depth 16); passes of every shape up
to ``depth`` beats back to back with 1 to 127 rows, the next pass loading
during each replay; all-(-1), all-(+1), all-0, one-hot weights; decode
chunks with ``cont``; both errors and the store's recovery after them;
single-beat passes loaded while their ``play`` command waits (the replay's
first read right behind the registered write: ``late_single_beat`` fails
if such a buffer is marked full with its beat).
Measured without stalls: 1.000 ``wgt`` beats per cycle over 8 passes (rows 1
to 3, and rows = 1 throughout); decode chunks of 24/18/18/18 beats: 0.951.

Cost (ECP5-85F, out of context, seed 1; ``trilut synth --unit wstore --set
depth=D``): 320-bit codes (the default engine, G 3, T 4, L 16) at depth 352
(max_width 256): 1,158 LUT4, 1,124 FF, 18 DP16KD, 130.2 MHz (block RAM
clock-to-out into the register beside it, 7.7 ns); depth 88 (128): 1,086
LUT4, 1,104 FF, 18 DP16KD, 133.3 MHz; depth 3072 (768): 2,459 LUT4, 1,156
FF, 108 DP16KD, 93.0 MHz (the read mux over six rows of RAMs per buffer
before that register). :meth:`resources` gives the DP16KD count exactly in
all three. Against the single stalling memory before (308 / 272 / 1,090
LUT4, 470 / 450 / 502 FF, 18 / 9 / 108 DP16KD, 144.7 / 140.0 / 103.3 MHz):
the output queue (81 LUT-RAM slices), the buffer select and the registers
beside the memories; a buffer no longer shares its block RAMs with the
other (depth 88: 9 more); in the accelerator top it replaces the datapath's
3-deep weight FIFO. Since session 13 both buffers share one memory when it
fits one row of blocks (``shared``): depth 88 then measures 871 LUT4, 805
FF, 9 DP16KD, 157.5 MHz (the figures above are of one memory per buffer,
which depths 352 and 3072 keep).
"""
from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .arith import NO_COLLISION, delay
from .queue import OutputQueue

__all__ = ["WeightStore"]

MAX_DEPTH = 1 << 16
MAX_ROWS = 1 << 16
#: Entries of the output queue: the beats issued (read, registered, queued)
#: but not yet taken; enough for one beat per cycle.
_QUEUE_DEPTH = 8

# DP16KD (18 Kbit) aspect ratios in simple dual-port mode: (words, bits).
_DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def _codes_shape(codes):
    """The codes shape from an engine (its ``wgt`` codes), a layout or shape,
    or an int (plain unsigned bits)."""
    sig = getattr(codes, "signature", None)
    if sig is not None and "wgt" in getattr(sig, "members", {}):
        return sig.members["wgt"].signature.members["payload"].shape["codes"].shape
    if isinstance(codes, (data.Layout, Shape)):
        return codes
    if isinstance(codes, bool) or not isinstance(codes, int):
        raise TypeError(f"codes must be an engine, a layout, a shape or a bit count, "
                        f"got {codes!r}")
    return unsigned(check_int("codes", codes, 1))


class WeightStore(wiring.Component):
    """Double-buffered weight store (see the module docstring).

    Parameters: ``codes`` the payload of one weight beat's codes: an engine
    (its ``wgt`` codes layout), a layout or shape, or a bit count;
    ``depth`` beats per buffer (1..65536); ``max_rows`` sets the width of
    the ``rows`` field (1..65536).

    Memory: ``2 * depth`` words of ``code_bits`` bits, one buffer in each
    half, when that fits one row of block RAMs (:attr:`shared`), else one
    memory of ``depth`` words per buffer (:meth:`resources`).
    """

    def __init__(self, codes, *, depth, max_rows=4096):
        self._codes = _codes_shape(codes)
        self._depth = check_int("depth", depth, 1, MAX_DEPTH)
        self._max_rows = check_int("max_rows", max_rows, 1, MAX_ROWS)
        count = unsigned(self._depth.bit_length())
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({
                "codes": self._codes, "last": 1}))),
            "play": In(stream.Signature(data.StructLayout({
                "k_blocks": count, "n_blocks": count,
                "rows": unsigned(self._max_rows.bit_length()), "cont": 1}))),
            "wgt": Out(stream.Signature(data.StructLayout({
                "codes": self._codes, "last_k": 1, "last_n": 1}))),
            "error": Out(1),
            "overflow": Out(1),
            "mismatch": Out(1),
        })

    depth = property(lambda self: self._depth, doc="beats per buffer")
    max_rows = property(lambda self: self._max_rows)
    code_bits = property(lambda self: Shape.cast(self._codes).width,
                         doc="bits of one beat's codes")
    latency = property(lambda self: 5, doc="cycles from a pass's final load beat (its play "
                                            "command waiting) to its first wgt beat; one "
                                            "more for a single-beat pass")

    @staticmethod
    def depth_for(engine, max_k, max_n):
        """Beats of the largest pass an engine runs: ``ceil(max_k / k_block)
        * ceil(max_n / lanes)``."""
        check_int("max_k", max_k, 1)
        check_int("max_n", max_n, 1)
        return -(-max_k // engine.k_block) * -(-max_n // engine.lanes)

    shared = property(lambda self: 2 * self._depth <= _DP16KD_SHAPES[-1][0],
                      doc="both buffers in one memory: it fits one row of block RAMs")

    def resources(self):
        """Estimated block RAMs: the cheapest DP16KD aspect ratio tiling the
        memory of both buffers (:attr:`shared`), or each buffer's, twice."""
        def tiles(words):
            return min(-(-words // d) * -(-self.code_bits // w) for d, w in _DP16KD_SHAPES)
        return {"dp16kd": tiles(2 * self._depth) if self.shared else 2 * tiles(self._depth)}

    # --- host side ---------------------------------------------------------

    @staticmethod
    def load_beats(wgt_beats):
        """``load`` payloads for one pass from the engine's ``wgt`` beats of
        one row (:meth:`~trilut.hw.matmul.TLMMEngine.wgt_beats`)."""
        beats = list(wgt_beats)
        if not beats:
            raise ValueError("a pass needs at least one weight beat")
        return [{"codes": b["codes"], "last": int(i == len(beats) - 1)}
                for i, b in enumerate(beats)]

    def play_command(self, k_blocks, n_blocks, rows, cont=False):
        """The ``play`` payload replaying a pass of ``n_blocks`` output blocks
        of ``k_blocks`` k-blocks ``rows`` times."""
        check_int("k_blocks", k_blocks, 1, self._depth)
        check_int("n_blocks", n_blocks, 1, self._depth)
        if k_blocks * n_blocks > self._depth:
            raise ValueError(f"k_blocks * n_blocks = {k_blocks * n_blocks} exceeds "
                             f"depth = {self._depth}")
        check_int("rows", rows, 1, (1 << self._max_rows.bit_length()) - 1)
        return {"k_blocks": k_blocks, "n_blocks": n_blocks, "rows": rows,
                "cont": int(bool(cont))}

    def decode_passes(self, wgt_beats, k_blocks):
        """Decode (one activation row): split the row's ``wgt`` beats into
        the fewest chunks of whole output blocks that fit ``depth``, as
        equal in size as they can be (larger ones first). Returns ``[(load
        beats, play command), ...]``; every command but the last has
        ``cont`` set, so the engine sees one row."""
        beats = list(wgt_beats)
        check_int("k_blocks", k_blocks, 1, self._depth)
        if not beats or len(beats) % k_blocks:
            raise ValueError(f"{len(beats)} weight beats are not whole output blocks "
                             f"of k_blocks = {k_blocks}")
        blocks = len(beats) // k_blocks
        chunks = -(-blocks // (self._depth // k_blocks))
        out, start = [], 0
        for i in range(chunks):
            n = blocks // chunks + (i < blocks % chunks)
            part = beats[start:start + n * k_blocks]
            out.append((self.load_beats(part),
                        self.play_command(k_blocks, n, 1, cont=i < chunks - 1)))
            start += n * k_blocks
        return out

    # --- gateware ----------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        D = self._depth
        # Both buffers in one memory (buffer b at words b * D ..) when it
        # fits one row of block RAMs at their widest (``shared``); else one
        # memory per buffer, the buffer selected after their registers (a
        # deeper memory is rows of blocks with a select between the blocks
        # and the register, which then cannot be the blocks' own). Each
        # memory is read every cycle into a register beside it. The counters
        # below count within a buffer; wabs / rabs step alongside them as
        # the shared memory's addresses (no adder on the address).
        shared = self.shared
        mems = [memory.Memory(shape=self._codes, depth=2 * D if shared else D, init=[],
                              attrs=NO_COLLISION) for _ in range(1 if shared else 2)]
        wps, rps = [], []
        for b, mem in enumerate(mems):
            m.submodules[f"mem{b}"] = mem
            wps.append(mem.write_port())
            rps.append(mem.read_port(domain="sync"))
        if shared:
            wabs, rabs = Signal(range(2 * D), name="wabs"), Signal(range(2 * D), name="rabs")

        # Both memory addresses and the write enable come from registers (at
        # large depths they fan out to a hundred block RAMs).
        full = [Signal(name=f"full{b}") for b in range(2)]
        last_addr = [Signal(range(D), name=f"last_addr{b}") for b in range(2)]
        overflow = Signal()
        mismatch = Signal()
        m.d.comb += [self.overflow.eq(overflow), self.mismatch.eq(mismatch),
                     self.error.eq(overflow | mismatch)]

        # Load side: fill buffer wbuf at waddr; once its last word is written
        # (room low) further beats are dropped. The write port is a register
        # stage behind the take (address, data and enables registered every
        # cycle: the take reaches no block RAM).
        wbuf = Signal()
        waddr = Signal(range(D))
        room = Signal(init=1)
        take = Signal()
        m.d.comb += [
            self.load.ready.eq(~Mux(wbuf, full[1], full[0])),
            take.eq(self.load.valid & self.load.ready),
        ]
        w_addr = Signal(range(2 * D) if shared else range(D))
        w_data = Signal(self._codes)
        m.d.sync += [w_addr.eq(wabs if shared else waddr), w_data.eq(self.load.payload.codes)]
        for b, wp in enumerate(wps):
            w_en = Signal(name=f"w_en{b}")
            m.d.sync += w_en.eq(take & room if shared else take & room & (wbuf == b))
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data), wp.en.eq(w_en)]
        # A single-beat pass's word is written while the replay would read
        # it: its buffer is marked full one cycle later.
        full_late = [Signal(name=f"full_late{b}") for b in range(2)]
        m.d.sync += [f.eq(0) for f in full_late]
        for b in range(2):
            with m.If(full_late[b]):
                m.d.sync += full[b].eq(1)
        with m.If(take):
            with m.If(~room):
                m.d.sync += overflow.eq(1)
            with m.If(self.load.payload.last):
                m.d.sync += [waddr.eq(0), room.eq(1), wbuf.eq(~wbuf)]
                if shared:
                    m.d.sync += wabs.eq(Mux(wbuf, 0, D))
                for b in range(2):
                    with m.If(wbuf == b):
                        m.d.sync += last_addr[b].eq(waddr)
                        with m.If(waddr == 0):
                            m.d.sync += full_late[b].eq(1)
                        with m.Else():
                            m.d.sync += full[b].eq(1)
            with m.Elif(waddr == D - 1):
                m.d.sync += room.eq(0)
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)
                if shared:
                    m.d.sync += wabs.eq(wabs + 1)

        # Command register: play.ready depends on it alone.
        cmd = Signal.like(self.play.payload)
        cmd_valid = Signal()
        m.d.comb += self.play.ready.eq(~cmd_valid)
        with m.If(self.play.valid & self.play.ready):
            m.d.sync += [cmd.eq(self.play.payload), cmd_valid.eq(1)]

        # Replay of the active command from buffer rbuf at raddr.
        active = Signal()
        rbuf = Signal()
        raddr = Signal(range(D))
        count = self.play.payload.k_blocks.shape()
        klast, nlast = Signal(count), Signal(count)
        rlast = Signal(self.play.payload.rows.shape())
        cont = Signal()
        kb, nb = Signal(count), Signal(count)
        row = Signal.like(rlast)

        # The replay pipeline never stalls: a beat is issued only against a
        # free entry of the output queue.
        oq = OutputQueue(m, self.wgt, depth=_QUEUE_DEPTH, name="out_q")
        issue = Signal()
        at_k, row_end, pass_end, at_last = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            oq.issue.eq(issue),
            issue.eq(active & Mux(rbuf, full[1], full[0]) & oq.room),
            at_k.eq(kb == klast),
            row_end.eq(at_k & (nb == nlast)),
            pass_end.eq(row_end & (row == rlast)),
            at_last.eq(raddr == Mux(rbuf, last_addr[1], last_addr[0])),
        ]
        m.d.comb += [rp.addr.eq(rabs if shared else raddr) for rp in rps]
        # Every counter is back at zero after a pass, so a new command only
        # sets the limits.
        with m.If(issue):
            m.d.sync += kb.eq(Mux(at_k, 0, kb + 1))
            with m.If(at_k):
                m.d.sync += nb.eq(Mux(row_end, 0, nb + 1))
            with m.If(row_end):
                m.d.sync += row.eq(Mux(pass_end, 0, row + 1))
            with m.If(at_last != row_end):
                m.d.sync += mismatch.eq(1)
            with m.If(pass_end):
                m.d.sync += [active.eq(0), rbuf.eq(~rbuf), raddr.eq(0)]
                if shared:
                    m.d.sync += rabs.eq(Mux(rbuf, 0, D))
                for b in range(2):
                    with m.If(rbuf == b):
                        m.d.sync += full[b].eq(0)
            with m.Elif(row_end | at_last):
                m.d.sync += raddr.eq(0)
                if shared:
                    m.d.sync += rabs.eq(Mux(rbuf, D, 0))
            with m.Else():
                m.d.sync += raddr.eq(raddr + 1)
                if shared:
                    m.d.sync += rabs.eq(rabs + 1)
        with m.If(cmd_valid & (~active | (issue & pass_end))):
            k, n, r = cmd.k_blocks, cmd.n_blocks, cmd.rows
            m.d.sync += [active.eq(1), cmd_valid.eq(0), cont.eq(cmd.cont),
                         klast.eq(Mux(k == 0, 0, k - 1)), nlast.eq(Mux(n == 0, 0, n - 1)),
                         rlast.eq(Mux(r == 0, 0, r - 1))]
            with m.If((k == 0) | (n == 0) | (r == 0)):
                m.d.sync += mismatch.eq(1)

        # Two stages: the memories' outputs (read issued last cycle), then a
        # register beside each (block RAM clock-to-out is slow); the
        # issuing buffer's into the output queue.
        v1, k1, n1 = Signal(), Signal(), Signal()
        v2, k2, n2 = Signal(), Signal(), Signal()
        codes = [delay(m, rp.data, 1, name=f"codes{b}") for b, rp in enumerate(rps)]
        if not shared:
            codes = [Mux(delay(m, rbuf, 2, name="sel"), codes[1], codes[0])]
        m.d.sync += [v1.eq(issue), k1.eq(at_k), n1.eq(row_end & ~cont),
                     v2.eq(v1), k2.eq(k1), n2.eq(n1)]
        oq.push(v2, codes=codes[0], last_k=k2, last_n=n2)
        return m
