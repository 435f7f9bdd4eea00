# amaranth: UnusedElaboratable=no
"""The decoder with its weights resident in the simulated SDRAM (issue 14):
``top-llm-small`` behind the byte-protocol bridge with LiteDRAM's controller
and SDRAM model (``SimDevice(sdram=True)``). Every linear's weights are
loaded once (``weight_image``, ``Driver.load_weights``) and fed by FEED;
prefill + 8 decode steps equal the golden model integer for integer with
no weight crossing the link; a wrong reference model is caught; weights
overwritten after loading give ``WeightsNotResident`` before the segment
runs, and loading them again recovers."""
import time

import numpy as np
import pytest

from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.gen.units import UNITS
from trilut.host.compiler import CompileError
from trilut.host.driver import WeightsNotResident
from trilut.host.generate import GoldenDecoder, SimDecoder, generate
from trilut.host.llama import load_llama, quantize
from trilut.host.llm_compiler import compile_layer, weight_image

pytestmark = [pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

PARAMS = UNITS["top-llm-small"].defaults
MODEL = dict(hidden=64, layers=2, heads=4, ffn=128, vocab=256, max_pos=64, kv_heads=2)
PROMPT = np.random.default_rng(7).integers(0, 256, 19)      # two chunks of 18 + 1
NEW = 9                                                      # prefill + 8 decode steps: 27 KV positions


def _params(path, seed):
    return quantize(load_llama(write_random_checkpoint(path, **MODEL, seed=seed)))


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return _params(tmp_path_factory.mktemp("ckpt"), 3)


@pytest.fixture(scope="module")
def decoder(params):
    with SimDecoder(params, PARAMS, sdram=True) as dec:
        yield dec


def test_weight_image_and_feed_layout(params):
    """One blob per ternary linear, each segment's part of the layout named
    as Driver.run's weights= expects (linear0.. in program order; attention
    on chip: one segment per layer)."""
    image = weight_image(params, PARAMS)
    assert list(image)[:7] == [f"layers.0.{n}" for n in
                               ("q", "k", "v", "o", "gate", "up", "down")]
    assert len(image) == 7 * MODEL["layers"]
    layout = {name: (64 * i, len(b)) for i, (name, b) in enumerate(image.items())}
    (seg,) = compile_layer(params, 1, PARAMS, rows=1, kv_pos=3, image=image)
    names = ("q", "k", "v", "o", "gate", "up", "down")
    assert seg.feed_layout(layout) == {f"linear{i}": layout[f"layers.1.{n}"]
                                       for i, n in enumerate(names)}
    assert seg.weight_frames() == [image[f"layers.1.{n}"] for n in names]
    with pytest.raises(CompileError, match="holds no layers.1.q"):
        seg.feed_layout({})


def test_constants_placed_once_for_the_model(params):
    """const_plan: the gammas in sets of their own, the attention constants
    at entry 0 of the shared sets, the uniform entries in shared set 0; every
    segment writes the same contents into a set (resident), so the driver
    sends no constant again after the first step."""
    from trilut.host.llm_consts import const_plan
    plan, note = const_plan(params, PARAMS)
    layers = MODEL["layers"]
    assert plan.resident and note.startswith("resident")
    assert len(plan.full) == 2 * layers + 1 and plan.shared == 2 * layers  # gammas, QK + AV
    assert plan.sets <= PARAMS["const_sets"]
    seen = {}
    for li in range(layers):
        flags = dict(load_x=li == 0, final=li == layers - 1)
        (own,) = compile_layer(params, li, PARAMS, rows=1, kv_pos=2, **flags)
        (seg,) = compile_layer(params, li, PARAMS, rows=1, kv_pos=2, plan=plan, **flags)
        for s, entries in seg.consts:
            assert seen.setdefault(s, entries) == entries      # one content per set
        assert len(dict(seg.consts)[plan.first_shared]) == 1 + len(plan.uniform)  # all layers'
        for d, o in zip(seg.descriptors, own.descriptors):    # the same entries read
            assert _reads(seg, d) == _reads(own, o)


def _reads(prog, desc):
    """The constant entries a descriptor of ``prog`` reads (channel order)."""
    from amaranth.lib import data
    from trilut.hw.isa import LLM_FIELDS, Opcode, unpack_descriptor
    f, sets = unpack_descriptor(desc), dict(prog.consts)
    if f["opcode"] in (Opcode.ATTN_QK, Opcode.ATTN_AV):
        return [sets[f["const"]][0]]
    if f["opcode"] == Opcode.LINEAR and data.Const(LLM_FIELDS, f["reserved"]).uniform:
        return [sets[f["const"]][f["heads"]]] * f["n"]
    if f["opcode"] in (Opcode.LINEAR, Opcode.NORM):
        return sets[f["const"]][:f["n"]]
    return None


def test_programs_do_not_depend_on_kv_pos(params):
    """The kv_pos register moves a program (isa.KV_POS_DOC): compiled at two
    positions, a layer's segments are the same descriptors and constants,
    only their ``kv_pos`` (the register's value) differs; at_kv_pos moves one
    and checks the KV capacity."""
    for flags in (dict(load_x=True), dict(final=True)):
        old = compile_layer(params, 0, PARAMS, rows=2, kv_pos=3, **flags)
        new = compile_layer(params, 0, PARAMS, rows=2, kv_pos=11, **flags)
        for o, n in zip(old, new):
            assert (o.kv_pos, n.kv_pos) == (3, 11)
            assert o.descriptors == n.descriptors and o.consts == n.consts
            moved = o.at_kv_pos(11)
            assert moved.kv_pos == 11 and moved.descriptors is o.descriptors
    with pytest.raises(CompileError, match="KV positions 27 .. 28 beyond"):
        old[0].at_kv_pos(27)


def test_a_chunk_is_one_program(params):
    """compile_chunk merges the layers' segments into one program while it
    fits prog_depth: all of top-llm-small's layers without the trace STOREs
    (a decode step: one FEED, one start), one program per layer with them;
    the merged program's STOREs carry their layer's name, its weights
    every layer's in order."""
    from trilut.host.llm_compiler import compile_chunk
    from trilut.host.llm_consts import const_plan
    plan, _ = const_plan(params, PARAMS)
    image = weight_image(params, PARAMS)
    ((attn, prog),) = compile_chunk(params, PARAMS, 1, image=image, plan=plan)
    segs = [compile_layer(params, li, PARAMS, 1, 0, load_x=li == 0, final=li == 1, plan=plan)[0]
            for li in range(2)]
    assert attn is None and prog.descriptors == segs[0].descriptors[:-1] + segs[1].descriptors
    assert prog.linears == list(image) and prog.weight_frames() == list(image.values())
    assert prog.loads == [("x", MODEL["hidden"])] and [o.name for o in prog.outputs] == ["norm"]
    traced = compile_chunk(params, PARAMS, 1, trace=True, image=image, plan=plan)
    assert len(traced) == 2 and all(len(p.descriptors) <= PARAMS["prog_depth"]
                                    for _, p in traced)
    assert [o.name for o in traced[1][1].outputs][:2] == ["layers.1.attn_norm",
                                                         "layers.1.q_rope"]
    # Constants written two ways (each layer's own sets): never merged.
    assert len(compile_chunk(params, PARAMS, 1, image=image)) == 2


def test_driver_writes_changed_constants_only():
    """Driver.write_consts sends only the entries that differ from what it
    last wrote into the set; a hard reset, a raw write into the const window
    and a write that failed half-way forget, so nothing stale is assumed."""
    from trilut.host.driver import Driver
    from trilut.hw.isa import BUILD, const_words
    from trilut.hw.top import Accelerator
    acc = Accelerator(**PARAMS)
    build = BUILD.const({"max_rows": acc.max_rows, "banks": acc.banks,
                         "max_width": acc.max_width}).as_value().value

    class Link:
        writes, fail = [], False

        def reg_write(self, addr, words):
            if self.fail:
                raise TimeoutError("link down")
            self.writes.append((addr, list(words)))

        def reg_read(self, addr, n=1):
            return [build] * n

        def reconnect(self):
            pass

    class Device:
        def open(self):
            return self

        def make_link(self, accel, ins, outs, timeout):
            return link

        def hard_reset(self):
            return 0

    link = Link()
    drv = Driver(Device(), PARAMS)
    base = acc.regs.offset("const") + 16 * 3 * acc.const_stride

    def sent(entries):
        link.writes.clear()
        drv.write_consts(3, entries, changed_only=True)
        return [((a - base) // 16, len(w) // 4) for a, w in link.writes]

    assert sent([1, 2, 3]) == [(0, 3)] and link.writes[0][1] == [
        w for e in (1, 2, 3) for w in const_words(e)]
    assert sent([1, 2, 3]) == []                        # on the device already
    assert sent([1, 9, 3, 4]) == [(1, 1), (3, 1)]       # the entries that differ
    drv.hard_reset()
    assert sent([1, 9, 3, 4]) == [(0, 4)]               # a reset device: all again
    drv.write("const", [0, 0, 0, 0])
    assert sent([1, 9, 3, 4]) == [(0, 4)]               # a raw write: all again
    link.fail = True
    with pytest.raises(TimeoutError):
        drv.write_consts(3, [5, 9, 3, 4], changed_only=True)
    link.fail = False
    assert sent([1, 9, 3, 4]) == [(0, 4)]               # after a failed write: all again
    drv.forget()
    assert sent([1, 9, 3, 4]) == [(0, 4)]               # forgotten: all again
    link.writes.clear()
    drv.write_consts(3, [1, 9, 3, 4])                    # not changed_only: all
    assert [(a - base) // 16 for a, _ in link.writes] == [0] and sent([1, 9, 3, 4]) == []

    # The program and the kv_pos register: sent when they differ from the record.
    prog, kv = acc.regs.offset("prog"), acc.regs.offset("kv_pos")

    def wrote(descs=None, kv_pos=None):
        link.writes.clear()
        if descs is not None:
            drv.write_program(descs, changed_only=True)
        if kv_pos is not None:
            drv.set_kv_pos(kv_pos)
        return [a for a, _ in link.writes]

    assert wrote([7, 0], 5) == [prog, kv] and wrote([7, 0], 5) == []
    assert wrote([8, 0], 6) == [prog, kv]
    drv.write("kv_pos", 6)                               # raw: forgotten
    assert wrote([8, 0], 6) == [kv]
    drv.write("prog", [0] * 4)
    assert wrote([8, 0], 6) == [prog]
    drv.hard_reset()
    assert wrote([8, 0], 6) == [prog, kv]
    with pytest.raises(ValueError, match=r"kv_pos must be in \[0, 4095\], not 4096"):
        drv.set_kv_pos(4096)


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_prefill_and_decode_from_sdram_match_golden(decoder, params):
    tokens, logits = generate(decoder, PROMPT, NEW)
    want_tokens, want_logits = generate(GoldenDecoder(params), PROMPT, NEW)
    assert decoder.matches is True
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_array_equal(logits, want_logits)
    assert len(decoder.step_cycles) == NEW and min(decoder.step_cycles) > 0
    # No weight crossed the link: a decode step's stream payload is its
    # embedding row only (attention on chip: nothing else goes in), and it
    # is one program, every layer's weights in one FEED.
    cfg = params.cfg
    for step in decoder.step_link[1:]:
        assert step["STREAM_WRITE"]["payload"] == 2 * cfg.hidden
        assert step["FEED"]["requests"] == 1
        # Constants resident (const_plan) and the program the prefill's last
        # chunk (one token) already loaded: a decode step writes kv_pos only.
        assert (step["REG_WRITE"]["requests"], step["REG_WRITE"]["payload"]) == (1, 4), step
    # Each segment's engine took every weight beat (from the SDRAM) once per row.
    for prog, counters in decoder.counters:
        beats = sum(len(f) for f in prog.weight_frames()) // decoder.driver.accel.axis_bytes
        assert counters["engine_busy"] == beats * prog.seq, prog.passes


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_cycles_do_not_depend_on_host_speed(params):
    """From power-on, a prefill and a decode step take the same cycles, and
    the simulator the same total, through a host that waits 20 ms before
    every request as through one that does not (the harness clocks the
    design a fixed HOST_TURN cycles on the host's turn, whatever its speed;
    one that ran on while the host thought gave the slower host more)."""
    seen = []
    for pause in (0.0, 0.02):
        with SimDecoder(params, PARAMS, sdram=True) as dec:
            write = dec.device.write
            dec.device.write = lambda data: (time.sleep(pause), write(data))
            dec.run(PROMPT[:3])
            dec.run(PROMPT[3:4])
            seen.append((dec.step_cycles, dec.device.sync(), dec.matches))
    assert seen[0] == seen[1] and seen[0][2] is True, seen


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_wrong_model_is_caught(params, tmp_path):
    """A golden reference from other weights disagrees with the hardware."""
    wrong = _params(tmp_path, 4)
    with SimDecoder(params, PARAMS, sdram=True, reference=wrong) as dec:
        dec.run(PROMPT[:3])
        assert dec.matches is False


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-sdram")
def test_overwritten_weights_are_refused(decoder, params):
    decoder.reset()
    addr, n = decoder.layout["layers.0.q"]
    decoder.driver.write_memory(addr, bytes(n))           # layer 0's q blob zeroed
    with pytest.raises(WeightsNotResident, match=f"at {addr:#x} does not hold weight blob"):
        decoder.run(PROMPT[:2])
    decoder.driver.load_weights(decoder.image)            # loaded again: runs again
    decoder.reset()
    decoder.matches = True
    decoder.run(PROMPT[:2])
    assert decoder.matches is True
