"""The accelerator's memories, with one port interface per user.

* ``act``: the int8 banks, ``banks x max_rows x max_width`` bytes, addressed
  {bank, row, column} (each field rounded up to a power of two);
* ``res``: the int16 residual bank, {row, column};
* ``kv``: the KV region, K half then V half, one int8-engine weight beat
  (``lanes x kpc`` bytes) per word, written a byte at a time
  (:func:`~trilut.hw.rowio.kv_address`);
* ``prog``: the descriptors; ``const``: the constant entries (both written
  32 bits at a time through the register front, read by the sequencer).

Read ports are synchronous (data one cycle after the address; ``en``
defaults to 1), except ``kv_r`` and those of the blocked memories,
``const_r``, ``res_r`` and ``wide_r``: :data:`BLOCKED_READ_LATENCY` cycles
(``kv_r``: the block RAMs' data into one register beside them, which is
all the KV fetcher's FIFO and the activation reader see; the blocked ones
span several block RAMs across the chip: each block's read has a register
next to it, then the block select). The contents are not reset (a soft
reset keeps them).

No read meets a write to its own address in the same cycle
(:data:`~trilut.hw.arith.NO_COLLISION`): a pass writes rows after it has
read them (the sequencer's OVERLAP check), a residual pass reads each
destination element before it writes it, and the host writes programs and
constants while no program runs.
"""
from amaranth.hdl import Array, Module, Mux, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from .arith import NO_COLLISION, delay
from .isa import CONST_BITS, DESCRIPTOR_BITS
from .regfront import window_port
from .rowio import bits_for

__all__ = ["BLOCK_DEPTH", "BLOCKED_READ_LATENCY", "CONST_READ_LATENCY", "Memories"]

#: Entries of one ECP5 DP16KD at its widest (512 x 36): the block size of
#: the constant memory.
BLOCK_DEPTH = 512
#: Cycles from a blocked memory's read address to its data (``const_r``,
#: ``res_r``, ``wide_r``; also ``kv_r``'s): the block read, its output
#: register (block RAM clock-to-out is ~5.6 ns on ECP5), then the block
#: select (combinational, from registers).
BLOCKED_READ_LATENCY = 2
#: The constant memory's (the sequencer's ``param`` reads).
CONST_READ_LATENCY = BLOCKED_READ_LATENCY
#: The memories built of blocks, and their block depth (one DP16KD: 512 x 36
#: for the constants, 1024 x 18 for the int16 bank).
_BLOCKED = {"const": BLOCK_DEPTH, "res": 1024}
#: Single memories whose read data is registered (read latency
#: BLOCKED_READ_LATENCY): the KV region, whose words are several block RAMs
#: wide and go to two users.
_REGISTERED = {"kv"}


def _rd(depth, shape):
    return memory.ReadPort.Signature(addr_width=bits_for(depth), shape=shape)


def _wr(depth, shape, granularity=None):
    return memory.WritePort.Signature(addr_width=bits_for(depth), shape=shape,
                                      granularity=granularity)


class Memories(wiring.Component):
    """Every memory of the accelerator top. Ports (memory side; the users
    take them flipped): ``act_r``, ``act_w``; ``res_r``, ``wide_r`` (a
    second read port of the int16 bank), ``res_w``; ``kv_r``, ``kv_w``
    (byte enables); ``prog_r``, ``prog_w``; ``const_r``, ``const_w``.

    ``banks``, ``row_bits``, ``col_bits``: the bank geometry;
    ``kv_bytes``: bytes per KV word (a power of two <= one bank row block);
    ``prog_depth``, ``const_entries``: the window sizes."""

    def __init__(self, *, banks, row_bits, col_bits, kv_bytes, prog_depth, const_entries):
        bank = 1 << (row_bits + col_bits)
        kv_depth = 2 * bank // kv_bytes
        self._geom = dict(act=(banks * bank, signed(8)), res=(bank, signed(16)),
                          kv=(kv_depth, unsigned(8 * kv_bytes)),
                          prog=(prog_depth, unsigned(DESCRIPTOR_BITS)),
                          const=(const_entries, unsigned(CONST_BITS)))
        g = self._geom
        super().__init__({
            "act_r": Out(_rd(*g["act"])), "act_w": Out(_wr(*g["act"])),
            "res_r": Out(_rd(*g["res"])), "wide_r": Out(_rd(*g["res"])),
            "res_w": Out(_wr(*g["res"])),
            "kv_r": Out(_rd(*g["kv"])), "kv_w": Out(_wr(*g["kv"], granularity=8)),
            "prog_r": Out(_rd(*g["prog"])), "prog_w": Out(window_port(prog_depth,
                                                                      DESCRIPTOR_BITS)),
            "const_r": Out(_rd(*g["const"])), "const_w": Out(window_port(const_entries,
                                                                         CONST_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        ports = {"act": ("act_r", "act_w"), "res": ("res_r", "wide_r", "res_w"),
                 "kv": ("kv_r", "kv_w"), "prog": ("prog_r", "prog_w"),
                 "const": ("const_r", "const_w")}
        for name, (depth, shape) in self._geom.items():
            if name in _BLOCKED:
                self._blocked(m, name, depth, shape, _BLOCKED[name],
                              [getattr(self, p) for p in ports[name][:-1]],
                              getattr(self, ports[name][-1]))
                continue
            mem = memory.Memory(shape=shape, depth=depth, init=[], attrs=NO_COLLISION)
            m.submodules[f"{name}_mem"] = mem
            for pname in ports[name]:
                iface = getattr(self, pname)
                if pname.endswith("_w"):
                    port = mem.write_port(granularity=iface.signature.granularity)
                    m.d.comb += port.data.eq(iface.data)
                else:
                    port = mem.read_port(domain="sync")
                    rdata = port.data
                    if name in _REGISTERED:
                        rdata = delay(m, rdata, BLOCKED_READ_LATENCY - 1, name=f"{pname}_q")
                    m.d.comb += iface.data.eq(rdata)
                m.d.comb += [port.addr.eq(iface.addr), port.en.eq(iface.en)]
        return m

    @staticmethod
    def _blocked(m, name, depth, shape, block, rds, wr):
        """Memory ``name`` as blocks of ``block`` entries (one DP16KD at its
        width), each read port's data of each block read into its own
        register, the block selected after those registers (read latency
        :data:`BLOCKED_READ_LATENCY`)."""
        lo = bits_for(block)
        mems = []
        for i, base in enumerate(range(0, depth, block)):
            mem = memory.Memory(shape=shape, depth=min(block, depth - base), init=[],
                                attrs=NO_COLLISION)
            m.submodules[f"{name}_mem{i}"] = mem
            wp = mem.write_port(granularity=wr.signature.granularity)
            m.d.comb += [wp.addr.eq(wr.addr), wp.data.eq(wr.data),
                         wp.en.eq(Mux(wr.addr[lo:] == i, wr.en, 0))]
            mems.append(mem)
        for j, rd in enumerate(rds):
            tag = f"{name}{j}" if j else name
            sel = delay(m, rd.addr[lo:], BLOCKED_READ_LATENCY, name=f"{tag}_sel")
            outs = []
            for i, mem in enumerate(mems):
                rp = mem.read_port(domain="sync")
                m.d.comb += [rp.addr.eq(rd.addr), rp.en.eq(rd.en)]
                outs.append(delay(m, rp.data, 1, name=f"{tag}_q{i}"))
            m.d.comb += rd.data.eq(Array(outs)[sel] if len(outs) > 1 else outs[0])
