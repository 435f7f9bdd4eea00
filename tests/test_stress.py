# amaranth: UnusedElaboratable=no
"""``trilut stress`` in short: each part on a small budget, and each part's
wrong model (a perturbed golden, an injector whose faults go unnoticed) shown
to fail. The full campaign is ``trilut stress --full`` (docs/reliability.md)."""
import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from trilut.gen import stress
from trilut.gen.stress_programs import RESET_MODES, run_programs, run_resets
from trilut.gen.stress_units import UNIT_CASES, run_unit
from trilut.host.faults import FaultyDevice
from trilut.hw.requant import Requantizer
from trilut.sim.stress import FlatWrap, pack, unpack


def test_pack_unpack_round_trip():
    layout = data.StructLayout({"a": data.ArrayLayout(signed(13), 7), "b": unsigned(40),
                                "c": signed(3), "last": 1})
    rng = np.random.default_rng(0)
    vals = {"a": rng.integers(-4096, 4096, size=(50, 7)), "b": rng.integers(0, 1 << 40, 50),
            "c": rng.integers(-4, 4, 50), "last": rng.integers(0, 2, 50)}
    words = pack(layout, vals, 50)
    assert words.shape == (50, 5)      # 135 bits
    # the same bits as the layout's own packing
    one = layout.const({"a": vals["a"][3].tolist(), "b": int(vals["b"][3]),
                        "c": int(vals["c"][3]), "last": int(vals["last"][3])}).as_value().value
    assert sum(int(w) << (32 * i) for i, w in enumerate(words[3])) == one
    back = unpack(layout, words)
    for k, v in vals.items():
        assert np.array_equal(back[k], v)
    with pytest.raises(ValueError, match="field c"):
        pack(layout, dict(vals, c=np.full(50, 4)), 50)


def test_flatwrap_rejects_bad_streams():
    with pytest.raises(ValueError, match="no stream 'nope'"):
        FlatWrap(Requantizer(channels=1), ["nope"])


def test_units_short_and_wrong_model(tmp_path):
    row = run_unit("requant", vectors=20_000, seed=3, fail_dir=tmp_path, hold=100_000)
    assert row["vectors"] >= 20_000 and row["mismatches"] == 0, row
    assert row["vectors_per_s"] > 0
    bad = run_unit("requant", vectors=5_000, seed=3, broken=True, fail_dir=tmp_path)
    assert bad["mismatches"] >= 1
    first = bad["first_mismatch"]
    assert first["vector"].startswith("acc ") and (tmp_path / "requant-mismatch.json").exists()


def test_every_unit_is_registered():
    assert set(UNIT_CASES) >= {"tlmm", "direct", "int8mm", "requant", "residual", "shiftmax",
                               "shiftgelu-ivit", "shiftgelu-accurate", "layernorm", "dynquant"}


def test_programs_short_and_wrong_model():
    rep = run_programs(12, seed=5)
    assert rep["run"] == 12 and rep["hangs"] == 0 and rep["wrong"] == 0, rep
    assert sum(rep["outcomes"].values()) == 12
    bad = run_programs(6, seed=5, broken=True)
    assert bad["wrong"] >= 1, bad


def test_resets_soft_and_hard_and_wrong_models():
    """Soft and hard resets in turn at a random cycle of each pass kind; a
    wrong golden and a recovery that does not reset are both caught."""
    rep = run_resets(8, seed=2)
    assert rep["trials"] == 8 and rep["failures"] == 0, rep
    for mode in RESET_MODES:
        assert rep[mode]["trials"] == 4 and rep[mode]["failures"] == 0
        assert all(v == 1 for v in rep[mode]["per_pass"].values()), rep[mode]
    assert rep["hard"]["busy_at_reset"] >= 1 and rep["soft"]["busy_at_reset"] >= 1
    assert run_resets(1, seed=2, broken="golden")["failures"] == 1
    # the first trial resets a LOAD that waits for the rest of its rows
    for mode in RESET_MODES:
        skipped = run_resets(1, seed=2, broken="recovery", modes=[mode])
        assert skipped[mode]["failures"] == 1, skipped
    with pytest.raises(ValueError, match="broken"):
        run_resets(1, broken="sometimes")
    with pytest.raises(ValueError, match="modes"):
        run_resets(1, modes=["warm"])


def test_hard_reset_returns_every_register_and_reconnects():
    """The reset pin in the middle of a LOAD that waits for its rows: the
    accelerator is idle without error afterwards, the driver's link works
    (BUILD read back), and nothing is assumed loaded."""
    from trilut.gen.stress_programs import _open
    from trilut.hw.bridge import LEDS
    from trilut.hw.isa import Opcode, pack_descriptor
    dev, drv = _open()
    try:
        acc = drv.accel
        drv.write_program([pack_descriptor(Opcode.LOAD, rows=4, k=acc.max_width),
                           pack_descriptor(Opcode.END)])
        drv.start()
        drv.send("s_axis", acc.row_frames(np.ones((1, acc.max_width), dtype=int)))
        assert dev.pause_after(100) & (1 << LEDS.index("busy"))
        assert drv.status().busy
        c0 = dev.cycles
        leds = drv.hard_reset()
        assert leds & (1 << LEDS.index("busy")) and dev.cycles > c0
        st = drv.status()
        assert not (st.busy or st.error or st.done), st
        assert drv._loaded is None
    finally:
        dev.close()
    with pytest.raises(TypeError, match="no reset pin"):
        from trilut.host.driver import Driver
        Driver(_LengthFlipDevice(), acc, check=False).hard_reset()


def test_soft_reset_empties_the_bridge_stream_buffers():
    """Found by the reset trials: a soft reset in a STORE left the rows
    already in the bridge's output buffer there, and the next program's
    output began with them (19 rows instead of 12); input the accelerator
    had not taken would likewise have gone to the next LOAD. The bridge now
    empties its stream FIFOs when a soft reset goes through."""
    from trilut.gen.stress_programs import _open
    from trilut.hw.isa import Opcode, pack_descriptor
    from trilut.hw.link import max_record_beats
    dev, drv = _open()
    try:
        acc = drv.accel
        depth = max_record_beats(drv.link.inputs[0])
        # output: a STORE of more rows than the buffer holds, never read
        drv.write_program([pack_descriptor(Opcode.STORE, rows=acc.max_rows, k=acc.max_width),
                           pack_descriptor(Opcode.END)])
        drv.start()
        dev.pause_after(20_000)
        assert drv.status().busy            # stalled on the full output buffer
        drv.soft_reset()
        assert drv.link.stream_read(0, 1 << 10) == []
        # input: rows sent with no LOAD to take them
        beats = drv._beats(0, acc.row_frames(np.zeros((2, acc.max_width), dtype=int)))
        assert drv.link.stream_write_some(0, beats[:10]) == 10
        drv.soft_reset()
        assert drv.link.stream_write_some(0, []) == 0 and drv.link._free[0] == depth
    finally:
        dev.close()


def test_block_short_and_wrong_model():
    row = stress.run_block(1)
    assert row["vectors"] == 1024 and row["mismatches"] == 0, row
    bad = stress.run_block(1, broken=True)
    assert bad["mismatches"] == 1 and bad["first_mismatch"]["image"] == 0


def test_link_faults_and_undetecting_injector():
    rep = stress.run_link(1, rate=2e-3, seed=4)
    assert rep["faults_injected"] > 0 and rep["undetected"] == 0, rep
    assert rep["wrong_answers"] == 0 and rep["throughput_cost"]["cycles_ratio"] > 1
    blind = stress.run_link(1, rate=2e-3, seed=4, detect=False, baseline=False)
    assert blind["undetected"] == blind["faults_injected"] > 0


def test_pin_level_uart_link_faults():
    rep = stress.run_link_uart(2, rate=3e-3, seed=2)
    assert rep["faults_injected"] > 0 and rep["undetected"] == 0, rep
    assert rep["wrong_answers"] == 0 and rep["runs_given_up"] == 0


def test_merge_reports_joins_parts_and_names_their_sources():
    row = lambda unit, bad=0: {"unit": unit, "vectors": 10, "mismatches": bad,
                               "vectors_per_s": 1.0}
    old = {"commit": "aaa", "units": [row("tlmm"), row("block")],
           "resets": {"trials": 5, "failures": 0}}
    new = {"commit": "bbb", "units": [row("block")], "programs": {"run": 7, "hangs": 0,
                                                                  "wrong": 0}}
    merged = stress.merge_reports([old, new], ["old.json", "new.json"])
    assert [u["unit"] for u in merged["units"]] == ["tlmm", "block"] and merged["ok"]
    src = merged["sources"]
    assert src["units"]["tlmm"]["commit"] == "aaa" and src["units"]["block"]["commit"] == "bbb"
    assert src["programs"]["report"] == "new.json" and src["resets"]["commit"] == "aaa"
    assert merged["resets"]["trials"] == 5 and merged["programs"]["run"] == 7
    # a failure in any joined part makes the whole report fail
    assert not stress.merge_reports([old, {"units": [row("tlmm", bad=1)]}])["ok"]


def test_faulty_device_checks_arguments():
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultyDevice(None, kinds=["gremlins"])
    with pytest.raises(ValueError, match="rate"):
        FaultyDevice(None, rate=1.5)


def test_cli_rejects_bad_options(capsys):
    from trilut.gen.cli import main
    assert main(["stress", "--only", "units", "--unit", "nope"]) == 2
    assert "unknown unit 'nope'" in capsys.readouterr().err
    assert main(["stress", "--only", "units", "--vectors", "-1"]) == 2


class _LengthFlipDevice:
    """Answers every request with an OK reply; the first reply's length
    field is damaged (claims 1,000 bytes), as a reply bit flip can do."""
    byte_time = 0.0

    def __init__(self):
        self.replies, self.first = [], True

    def open(self):
        return self

    def write(self, frame):
        from trilut.hw.link import REPLY
        from trilut.host.protocol import encode
        reply = bytearray(encode(frame[1] | REPLY, frame[2], b"\x00"))
        if self.first:
            reply[3:5] = (1000).to_bytes(2, "little")
            self.first = False
        self.replies.append(bytes(reply))

    def read(self, timeout):
        return self.replies.pop(0) if self.replies else b""


def test_damaged_reply_length_does_not_stall_the_link():
    """Found by the link campaign: a reply whose length field was damaged
    made the host parser wait for bytes that never came and swallow every
    later reply, so all retries timed out (the host gave up, and the soft
    reset after it failed the same way). The parser now drops a partial
    frame when a reply times out."""
    from trilut.host.protocol import Link
    link = Link(_LengthFlipDevice(), ([4], [4]), timeout=0.05, retries=2)
    link.reg_write(0x10, [1])
    assert link.stats["retries"] == 1 and link.stats["timeouts"] == 1


class _LateReplyBridge:
    """The bridge's side of the link, for the accounting of a damaged retry:
    requests are parsed as the hardware does (bytes that make no frame with
    a good CRC are dropped unanswered, every whole copy is answered), but the
    reply to the first request is held back until the host has sent its
    second copy, as a slow simulator does: the host times out on an intact
    request whose reply comes late."""
    byte_time = 0.0

    def __init__(self):
        from trilut.host.protocol import FrameParser
        self.parser, self.held, self.out, self.writes = FrameParser(), [], [], 0

    def open(self):
        return self

    def write(self, data):
        from trilut.hw.link import REPLY
        from trilut.host.protocol import encode
        self.writes += 1
        for f in self.parser.feed(data):
            (self.held if self.writes == 1 else self.out).append(
                encode(f.type | REPLY, f.seq, b"\x00"))
        if self.writes == 2:
            self.out, self.held = self.held + self.out, []

    def read(self, timeout):
        return self.out.pop(0) if self.out else b""


class _FlipSecondSync:
    """Stands in for FaultyDevice's random source: one bit flip, in the SYNC
    byte of the second frame written (the host's retry), nothing else."""

    def __init__(self, faulty):
        self.faulty, self.fired = faulty, False

    def random(self):
        if not self.fired and self.faulty.counts["frames"] == 2:
            self.fired = True
            return 0.0
        return 1.0

    def choice(self, kinds):
        return kinds[0]

    def randrange(self, n):
        return 0


@pytest.mark.parametrize("detect", [True, False])
def test_damaged_retry_answered_late_is_superseded_not_undetected(detect):
    """Issue 15's one undetected fault (a request bit flip, every answer
    exact), reproduced: the host timed out on an intact request whose reply
    was late and sent it again; a flip in the copy's SYNC byte made the
    bridge drop that copy unanswered, and the host took the late reply to
    the first copy. Nothing the host used was damaged and nothing noticed
    the flip, so the injector counted it undetected. It is now *superseded*
    (no more replies to that request than intact copies of it); the blind
    injector (``detect=False``) still counts it undetected."""
    from trilut.host.protocol import Link
    faulty = FaultyDevice(_LateReplyBridge(), rate=0.5, kinds=["flip"], detect=detect)
    faulty.rng = rng = _FlipSecondSync(faulty)
    link = Link(faulty, ([4], [4]), timeout=0.05, retries=2, seed=3)
    faulty.attach(link)
    for i in range(6):
        link.reg_write(0x10, [i])
    faulty.finish()
    assert rng.fired and link.stats["timeouts"] == 1 and link.stats["retries"] == 1
    c = faulty.counts
    assert c["injected"] == c["flip"] == 1 and c["detected"] == 0
    assert (c["superseded"], c["undetected"]) == ((1, 0) if detect else (0, 1)), c
