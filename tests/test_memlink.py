# amaranth: UnusedElaboratable=no
"""The ULX3S SDRAM behind the host link: MEM_WRITE / MEM_READ through the
bridge into LiteDRAM's controller and SDRAM model (one Verilator build of
``ByteAccelerator(sdram=True)``, shared by every simulation test here).

The reference is a dict byte address -> value updated by every write in
order; reads are compared with it byte for byte. ``broken`` models (writes
landing one word further on) must be caught. One case throttles the link to
the ULX3S build's 2 Mbaud at 50 MHz and checks the load rate against the
line rate."""
import random

import numpy as np
import pytest

from trilut.host.device import SimDevice
from trilut.host.driver import BLOB_ALIGN, Driver, MemoryMismatch, weight_blobs
from trilut.host.protocol import LinkError
from trilut.hw import link
from trilut.hw.link import FrameType, Status

# The small accelerator of tests/test_device.py (the memory does not depend on it).
PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=32, prog_depth=16, const_sets=4)
BOARD_LINK = dict(clk_hz=50_000_000, baud=2_000_000)      # the ULX3S-85F build's link
MEM = 32 << 20

# One worker runs the file: the module's SimDevice (a simulated LiteDRAM run) starts once.
pytestmark = pytest.mark.xdist_group("memlink")


@pytest.fixture(scope="module")
def drv():
    dev = SimDevice(PARAMS, sdram=True)
    with dev:
        yield Driver(dev, PARAMS)


def random_blocks(rng, count=24):
    """(addr, bytes): 1 byte .. several KB, odd and even addresses, both ends
    of the 32 MB (the last byte alone and a block ending on it), extreme
    values, every fourth block overlapping the one before."""
    spans = [(MEM - 1, 1), (MEM - 6000, 6000), (0, 16), (1, 9)]
    sizes = [1, 2, 3, 1019, 1020, 1021, 2048, 5000] + [rng.randrange(1, 4097)
                                                        for _ in range(count - 8)]
    for i, n in enumerate(sizes):
        addr = (min(spans[-1][0] + 7, MEM - n) if i % 4 == 3 else
                rng.randrange(0, MEM - n + 1))
        spans.append((addr, n))
    return [(addr, bytes(rng.choice((0x00, 0xFF, 0x80, 0x7F, rng.randrange(256)))
                         for _ in range(n))) for addr, n in spans]


def mismatches(drv, blocks, *, broken=False):
    """Write ``blocks`` in order, read every block's span back and count the
    bytes that differ from the reference (``broken``: a wrong reference
    whose writes land one word further on)."""
    model = {}
    for addr, data in blocks:
        drv.write_memory(addr, data)
        shift = link.MEM_ALIGN if broken else 0
        model.update((addr + shift + i, b) for i, b in enumerate(data))
    bad = 0
    for addr, data in blocks:
        got = drv.read_memory(addr, len(data))
        assert len(got) == len(data)
        bad += sum(g != model.get(addr + i) for i, g in enumerate(got))
    return bad


def test_random_blocks_read_back_equal(drv):
    blocks = random_blocks(random.Random(1))
    assert sum(len(d) for _, d in blocks) > 30_000
    assert mismatches(drv, blocks) == 0
    assert drv.read_memory(MEM - 1, 1) == blocks[1][1][-1:]     # the last byte, last written


def test_wrong_model_is_caught(drv):
    blocks = random_blocks(random.Random(2), count=10)
    assert mismatches(drv, blocks, broken=True) > 1000


def test_numpy_and_unaligned_edges(drv):
    # A word-unaligned write keeps its neighbours (merged host-side).
    drv.write_memory(0x1000, bytes(range(16)))
    drv.write_memory(0x1003, np.array([-1, -2, -3], dtype=np.int8))
    assert drv.read_memory(0x1000, 8) == bytes([0, 1, 2, 0xFF, 0xFE, 0xFD, 6, 7])
    drv.write_memory(0x1001, b"\xaa")
    assert drv.read_memory(0x1000, 3) == b"\x00\xaa\x02"


def test_out_of_range_refused_before_sending(drv):
    sent = drv.link.stats["requests"]
    for call, match in ((lambda: drv.write_memory(MEM - 1, b"ab"), "outside the memory"),
                        (lambda: drv.write_memory(-2, b"ab"), "outside the memory"),
                        (lambda: drv.write_memory(0, b""), "outside the memory"),
                        (lambda: drv.read_memory(MEM, 1), "outside the memory"),
                        (lambda: drv.read_memory(0, 0), "outside the memory"),
                        (lambda: drv.load_weights({"w": bytes(MEM)}, base=64),
                         "outside the memory")):
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(TypeError, match="integer"):
        drv.read_memory(0.5, 2)
    with pytest.raises(TypeError, match="bytes or a NumPy array"):
        drv.write_memory(0, [1, 2])
    with pytest.raises(ValueError, match="empty"):
        drv.load_weights({"w": b""})
    no_mem = Driver(drv.device, PARAMS, check=False, memory_bytes=0)
    with pytest.raises(ValueError, match="no external memory"):
        no_mem.write_memory(0, b"ab")
    assert drv.link.stats["requests"] == sent, "a refused request reached the link"


def test_device_refusals_are_clear(drv):
    drv.write_memory(MEM - 4, b"\x11\x22\x33\x44")
    with pytest.raises(LinkError, match="BAD_ADDRESS"):
        drv.link.mem_write(MEM - 2, b"abcd")                      # runs past the end
    with pytest.raises(LinkError, match="BAD_ADDRESS"):
        drv.link.mem_write(1, b"ab")                              # unaligned
    with pytest.raises(LinkError, match="BAD_ADDRESS"):
        drv.link.mem_read(MEM - 2, 4)
    with pytest.raises(LinkError, match="BAD_ADDRESS"):
        drv.link.mem_read(0, 3)                                   # odd length
    reply = drv.link.transact(FrameType.MEM_READ, b"\x00" * 4 + b"\x00\x00", 1)
    assert reply == bytes([Status.BAD_LENGTH])                    # count 0
    reply = drv.link.transact(FrameType.MEM_WRITE, b"\x00" * 4 + b"\x01", 1)
    assert reply == bytes([Status.BAD_LENGTH])                    # no whole word
    assert drv.read_memory(MEM - 4, 4) == b"\x11\x22\x33\x44", "a refused write wrote"


def test_load_weights_layout_and_verify(drv, monkeypatch):
    rng = np.random.default_rng(3)
    blobs = {"a": rng.integers(-1, 2, 999).astype(np.int8),
             "b": rng.integers(-32768, 32768, 700).astype(np.int16),
             "c": bytes([0xFF]) * 3}
    seen = []
    layout = drv.load_weights(blobs, base=0x20_0001, verify=True,
                              progress=lambda done, total: seen.append((done, total)))
    assert [a % BLOB_ALIGN for a, _ in layout.values()] == [0, 0, 0]
    assert layout["a"] == (0x20_0040, 999) and layout["b"][0] == 0x20_0040 + 1024
    assert seen[-1][0] == seen[-1][1]
    for name, (addr, n) in layout.items():
        assert drv.read_memory(addr, n) == weight_blobs(blobs)[name]
    # Verification must catch a readback that differs (a flipped bit).
    real = drv.read_memory

    def flipped(addr, n, **kw):
        data = bytearray(real(addr, n, **kw))
        data[-1] ^= 0x10
        return bytes(data)
    monkeypatch.setattr(drv, "read_memory", flipped)
    with pytest.raises(MemoryMismatch, match="'c' at .*byte 2"):
        drv.load_weights(blobs, base=0x20_0001, verify=True, progress=False)


def test_throttled_load_at_board_rate():
    """4 KB at the ULX3S link rate (2 Mbaud at 50 MHz: 250 cycles a byte):
    the load takes what the line allows (the stop-and-wait frames cost ~3 %)
    and reads back equal."""
    dev = SimDevice(PARAMS, sdram=True, **BOARD_LINK)
    with dev:
        d = Driver(dev, PARAMS)
        data = bytes(random.Random(4).randrange(256) for _ in range(4 * link.max_mem_write_bytes()))
        c0 = dev.sync()
        d.write_memory(0x40_0000, data)
        cycles = dev.sync() - c0
        rate = len(data) / (cycles / BOARD_LINK["clk_hz"])
        line = BOARD_LINK["baud"] / 10
        assert 0.9 * line < rate < line, f"{rate:.0f} B/s at a {line:.0f} B/s line"
        assert d.read_memory(0x40_0000, len(data)) == data


def _bridge_with_ideal_memory(ops, seed, *, broken=False):
    """Amaranth simulation of the Bridge alone (no accelerator, no LiteDRAM):
    ``ops`` MEM_WRITE / MEM_READ requests through it against a dict memory
    that takes commands and data and returns read words with random delays
    (30 % idle gaps on rx and every memory stream, 30 % backpressure on
    tx). Returns the mismatching read bytes (``broken``: the memory model
    swaps the bytes of every word it stores)."""
    import struct
    from amaranth.sim import Simulator
    from trilut.gen.litedram import generate
    from trilut.host.protocol import FrameParser, encode
    from trilut.hw.bridge import Bridge
    from trilut.hw.sdram import SDRAM
    from trilut.hw.top import Accelerator

    br = Bridge(Accelerator(**PARAMS), memory=SDRAM(generate(sim=True), max_burst=512))
    rng = random.Random(seed)
    words, ref, bad = {}, {}, [0]

    async def bench(ctx):
        ctx.set(br.s_axil.arready, 1)       # STATUS polls: answered at once (0)
        ctx.set(br.s_axil.rvalid, 1)
        parser = FrameParser()
        pending_w, pending_r = [], []       # word addresses awaiting data / to return
        for seq, (kind, addr, data) in enumerate(ops):
            payload = (struct.pack("<I", addr) + data if kind == "w"
                       else struct.pack("<IH", addr, len(data)))
            frame = encode(FrameType.MEM_WRITE if kind == "w" else FrameType.MEM_READ,
                           seq, payload)
            pos, reply = 0, None
            while reply is None:
                gap = rng.random() < 0.3
                ctx.set(br.rx.valid, pos < len(frame) and not gap)
                ctx.set(br.rx.payload, frame[pos] if pos < len(frame) else 0)
                ctx.set(br.tx.ready, rng.random() >= 0.3)
                for s in (br.mem_write_cmd, br.mem_read_cmd, br.mem_write_data):
                    ctx.set(s.ready, rng.random() >= 0.3)
                r_ok = bool(pending_r) and rng.random() >= 0.3
                ctx.set(br.mem_read_data.valid, r_ok)
                if r_ok:
                    a, last = pending_r[0]
                    ctx.set(br.mem_read_data.payload, {"data": words.get(a, 0), "last": last})
                _, _, rx_rdy, tx_v, tx_p, wc_v, wc_r, wc_p, rc_v, rc_r, rc_p, wd_v, wd_r, wd_p, \
                    rd_r = await ctx.tick().sample(
                        br.rx.ready, br.tx.valid, br.tx.payload,
                        br.mem_write_cmd.valid, br.mem_write_cmd.ready,
                        br.mem_write_cmd.payload, br.mem_read_cmd.valid,
                        br.mem_read_cmd.ready, br.mem_read_cmd.payload,
                        br.mem_write_data.valid, br.mem_write_data.ready,
                        br.mem_write_data.payload, br.mem_read_data.ready)
                if pos < len(frame) and not gap and rx_rdy:
                    pos += 1
                if wc_v and wc_r:
                    pending_w += range(wc_p.addr, wc_p.addr + wc_p.len + 1)
                if rc_v and rc_r:
                    n = rc_p.len + 1
                    pending_r += [(rc_p.addr + i, i == n - 1) for i in range(n)]
                if wd_v and wd_r:
                    v = wd_p.data
                    words[pending_w.pop(0)] = ((v >> 8) | (v & 0xFF) << 8) if broken else v
                if r_ok and rd_r:
                    pending_r.pop(0)
                if tx_v and ctx.get(br.tx.ready):
                    for f in parser.feed(bytes([tx_p])):
                        reply = f
            assert reply.seq == seq and reply.payload[0] == Status.OK, reply
            if kind == "w":
                ref.update((addr + i, b) for i, b in enumerate(data))
            else:
                bad[0] += sum(g != ref.get(addr + i, 0)
                              for i, g in enumerate(reply.payload[1:]))
                assert len(reply.payload) == 1 + len(data)

    sim = Simulator(br)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bad[0]


def _ops(rng):
    ops = []
    for n in (2, 4, 1020, 64, 2):
        addr = rng.randrange(0, MEM - n, 2) if n != 4 else MEM - 4
        ops.append(("w", addr, bytes(rng.randrange(256) for _ in range(n))))
        ops.append(("r", addr, bytes(min(n, link.max_mem_read_bytes()))))
    return ops


def test_bridge_memory_path_with_gaps_and_backpressure():
    assert _bridge_with_ideal_memory(_ops(random.Random(5)), 5) == 0


def test_bridge_memory_path_wrong_model_is_caught():
    assert _bridge_with_ideal_memory(_ops(random.Random(5)), 5, broken=True) > 500


def test_bridge_without_memory_refuses_mem_requests():
    """The default bridge (no memory) answers MEM_* and FEED as unknown types."""
    import struct
    from amaranth.sim import Simulator
    from trilut.host.protocol import FrameParser, encode
    from trilut.hw.bridge import Bridge
    from trilut.hw.top import Accelerator

    br = Bridge(Accelerator(**PARAMS))
    assert br.memory is None and br.memory_bytes == 0
    assert not any(name.startswith("mem_") for name in br.signature.members)
    replies = []

    async def bench(ctx):
        ctx.set(br.s_axil.arready, 1)
        ctx.set(br.s_axil.rvalid, 1)
        ctx.set(br.tx.ready, 1)
        parser = FrameParser()
        for seq, (ftype, payload) in enumerate(((FrameType.MEM_WRITE, bytes(6)),
                                                (FrameType.MEM_READ, struct.pack("<IH", 0, 2)),
                                                (FrameType.FEED, bytes(9)))):
            for b in encode(ftype, seq, payload):
                ctx.set(br.rx.valid, 1)
                ctx.set(br.rx.payload, b)
                await ctx.tick().until(br.rx.ready)
            ctx.set(br.rx.valid, 0)
            for _ in range(200):
                _, _, valid, byte = await ctx.tick().sample(br.tx.valid, br.tx.payload)
                got = parser.feed(bytes([byte])) if valid else []
                if got:
                    replies.append((ftype, got[0]))
                    break

    sim = Simulator(br)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [(f.type, f.payload) for _, f in replies] == [
        (t | link.REPLY, bytes([Status.BAD_TYPE])) for t in (FrameType.MEM_WRITE,
                                                            FrameType.MEM_READ,
                                                            FrameType.FEED)]
    assert br.feeder is None


# --- weights resident in the SDRAM: the feeder (FEED) -------------------------------

def _resident_run(drv, prog, rng, layout):
    m_rows, k = prog.shape
    x = rng.integers(-128, 128, size=(m_rows, k))
    x[0, :] = -128
    x[-1, :] = 127
    got = drv.run(prog, x, weights=layout)["y"]
    want = prog.golden(x)
    mism = np.argwhere(got != want)
    assert got.shape == want.shape and not len(mism), (
        f"{len(mism)} mismatches; first at {tuple(mism[0])}")
    return x


def test_resident_weights_bit_exact(drv):
    """load_weights once; then each run sends the input and one FEED (which
    also starts the accelerator) and reads the result: equal to golden,
    with no weight byte and no CTRL write on the link."""
    from test_device import LinearProgram
    rng = np.random.default_rng(7)
    for i, shape in enumerate(((16, 32, 32), (3, 7, 8))):
        prog = LinearProgram(drv.accel, rng, *shape)
        layout = drv.load_weights(prog, base=0x10_0000 + i * 0x1_0000 + 2 * i)
        _resident_run(drv, prog, rng, layout)
        drv.link.traffic.clear()
        x = _resident_run(drv, prog, rng, layout)
        t = drv.link.efficiency()
        assert t["FEED"]["requests"] == 1 and "REG_WRITE" not in t, t
        assert t["STREAM_WRITE"]["payload"] == len(b"".join(prog.input_frames(x))), t


def test_resident_wrong_model_is_caught(drv):
    from test_device import LinearProgram
    rng = np.random.default_rng(8)
    prog = LinearProgram(drv.accel, rng, 4, 32, 8, broken=True)
    layout = drv.load_weights(prog, base=0x30_0000)
    with pytest.raises(AssertionError, match="mismatches"):
        _resident_run(drv, prog, rng, layout)


def test_resident_weights_not_there_is_a_clear_error(drv):
    """A layout the memory does not hold (moved, overwritten, another
    program's, missing a blob) stops before anything runs; a new driver
    checks the memory once by reading it back."""
    from test_device import LinearProgram
    from trilut.host.driver import WeightsNotResident
    rng = np.random.default_rng(9)
    prog = LinearProgram(drv.accel, rng, 4, 32, 8)
    other = LinearProgram(drv.accel, rng, 4, 32, 8)
    layout = drv.load_weights(prog, base=0x50_0000)
    (addr, n), = layout.values()
    started = drv.counters()["cycles"]
    for bad, match in (({"linear0": (addr + 64, n)}, "does not hold weight blob 'linear0'"),
                       ({"w": (addr, n)}, "'linear0' of the program is not in the layout"),
                       ({"linear0": (addr, n - 2)}, "loaded for another program")):
        with pytest.raises(WeightsNotResident, match=match):
            drv.run(prog, np.zeros(prog.shape, dtype=int), weights=bad)
    with pytest.raises(WeightsNotResident, match="does not hold"):
        drv.run(other, np.zeros(other.shape, dtype=int), weights=layout)
    assert drv.counters()["cycles"] == started, "the accelerator ran"
    fresh = Driver(drv.device, PARAMS)              # knows nothing: reads back once
    _resident_run(fresh, prog, rng, layout)
    drv.write_memory(addr + 10, b"\x00\x01")        # overwrites a byte of the blob
    with pytest.raises(WeightsNotResident, match="overwritten"):
        drv.run(prog, np.zeros(prog.shape, dtype=int), weights=layout)
    no_mem = Driver(drv.device, PARAMS, check=False, memory_bytes=0)
    with pytest.raises(WeightsNotResident, match="no external memory"):
        no_mem.run(prog, np.zeros(prog.shape, dtype=int), weights=layout)


def test_feed_refusals_and_busy_memory(drv):
    """FEED checks every frame first (nothing queued on a refusal); with a
    frame queued that the idle accelerator does not take, MEM_* are BUSY
    until an abort."""
    nb = drv.link.inputs[1]
    for frames, match in (([(1, nb)], "BAD_ADDRESS"), ([(MEM - nb, 2 * nb)], "BAD_ADDRESS"),
                          ([(0, nb), (0, nb + 2)], "BAD_LENGTH"), ([(0, 0)], "BAD_LENGTH")):
        with pytest.raises(LinkError, match=match):
            drv.link.feed(frames)
    reply = drv.link.transact(FrameType.FEED, b"\x00" + bytes(7), 1)
    assert reply == bytes([Status.BAD_LENGTH])                    # not 1 + 8n bytes
    from trilut.hw.bridge import FEED_QUEUE
    assert not drv.link.feed([(0, nb)] * (FEED_QUEUE + 1))         # FULL: nothing queued
    assert drv.read_memory(0, 2) is not None                       # and so not busy
    assert drv.link.feed([(0, 1 << 16)])                           # more than the store takes
    with pytest.raises(LinkError, match="BUSY"):
        drv.read_memory(0, 2)
    drv.soft_reset()                                              # aborts the feeder first
    assert len(drv.read_memory(0, 2)) == 2
    assert not drv.status().busy


def test_waiting_read_and_stream_numbers(drv):
    """A STREAM_WAIT read with no output coming answers empty after the
    bridge's read_wait (2^17 cycles), not never; a stream byte naming no
    stream is BAD_STREAM (the wait bit is no stream number on a write)."""
    import struct
    c0 = drv.device.sync()
    assert drv.link.stream_read(0, 4, wait=True) == []
    waited = drv.device.sync() - c0
    assert 1 << 17 <= waited < (1 << 17) + 1000, waited
    for ftype, stream in ((FrameType.STREAM_WRITE, link.STREAM_WAIT),
                          (FrameType.STREAM_WRITE, 2), (FrameType.STREAM_READ, 1),
                          (FrameType.STREAM_READ, link.STREAM_WAIT | 1)):
        reply = drv.link.transact(ftype, struct.pack("<BH", stream, 0))
        assert reply == bytes([Status.BAD_STREAM]), (ftype, stream, reply)
