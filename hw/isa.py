"""The accelerator's instruction set and host interface, in one place.

Everything the hardware (:mod:`trilut.hw.top`), the host driver and the
testbenches need to agree on is defined here once, as Python objects:

* :class:`Opcode`, :class:`Head`, :class:`EngineKind`, :class:`Epilogue`:
  descriptor field values (``amaranth.lib.enum.IntEnum``, so they compare
  with hardware values and pack as plain ints);
* :data:`DESCRIPTOR`: the 128-bit descriptor, a ``data.StructLayout``
  (little-endian fields, the first field at bit 0), and :func:`pack_descriptor`
  / :func:`unpack_descriptor` / :func:`descriptor_words`, which use that same
  layout (no bit position is written twice);
* :data:`REQUANT_CONST`, :data:`RESIDUAL_CONST`, :data:`GELU_CONST`,
  :data:`SOFTMAX_CONST` and :data:`GATEMUL_CONST`: the views of a 128-bit
  constant-memory entry (one per output channel; one per tensor for the
  attention passes);
* the bank numbers: int8 banks 0 .. ``banks - 1`` (at most
  :data:`MAX_BANKS`), the KV region :data:`KEY_BANK` / :data:`VALUE_BANK`
  and the int16 :data:`RESIDUAL_BANK`;
* :class:`ErrorCode`, :data:`CTRL` and :data:`STATUS`: what the sequencer
  reports;
* :class:`RegisterMap`: the AXI4-Lite register map of one build (offsets
  are assigned here, from the build's memory sizes, and nowhere else).

Descriptor fields are plain unsigned integers so that a malformed descriptor
(for example opcode 9) can be packed, sent and rejected by the hardware with
:attr:`ErrorCode.OPCODE`.
"""
from dataclasses import dataclass

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from ..golden.quant import M_BITS_DEFAULT

__all__ = [
    "Opcode", "Head", "EngineKind", "Epilogue", "ErrorCode", "RESIDUAL_BANK", "KEY_BANK",
    "LLM_FIELDS", "llm_fields",
    "VALUE_BANK", "MAX_BANKS",
    "DESCRIPTOR", "DESCRIPTOR_BITS", "FIELD_LIMITS", "pack_descriptor", "unpack_descriptor",
    "descriptor_words",
    "CONST_BITS", "REQUANT_CONST", "RESIDUAL_CONST", "GELU_CONST", "SOFTMAX_CONST",
    "GATEMUL_CONST", "pack_requant_const", "pack_residual_const", "pack_gelu_const",
    "pack_softmax_const", "pack_gatemul_const", "ROPE_CONST", "pack_rope_const", "rope_words",
    "const_words",
    "CTRL", "STATUS", "UNIT_FLAGS", "COUNTERS", "Register", "RegisterMap", "AXIL_DATA_BITS",
]


class Opcode(enum.IntEnum, shape=4):
    """Descriptor opcodes. 0 is END, so an unwritten (zero) program word stops
    the sequencer. LOAD and STORE move rows between the AXI4-Stream ports and
    a bank; NORM normalizes int16 rows of the residual bank into an int8
    bank (``head`` LAYERNORM, ``epilogue`` REQUANT: LayerNorm -> per-channel
    requantizer, gamma/beta folded into the constants, ``n`` must equal
    ``k``); ATTN_QK and ATTN_AV are the attention passes on the int8 engine
    (``engine`` INT8, ``heads`` heads looped inside the pass, K and V from the
    KV region: see ``docs/accelerator.md``); 7..15 are unknown."""
    END = 0
    LINEAR = 1
    ATTN_QK = 2
    ATTN_AV = 3
    NORM = 4
    LOAD = 5
    STORE = 6


class Head(enum.IntEnum, shape=2):
    """Row unit of a pass: NONE for LINEAR; LAYERNORM for NORM (RMSNORM is
    reserved)."""
    NONE = 0
    LAYERNORM = 1
    RMSNORM = 2


class EngineKind(enum.IntEnum, shape=1):
    """Engine of a pass: TLMM (ternary weights) or INT8 (int8 weights) for
    LINEAR, INT8 for ATTN_QK / ATTN_AV."""
    TLMM = 0
    INT8 = 1


class Epilogue(enum.IntEnum, shape=3):
    """Units behind the engine. A LINEAR whose source is the int16
    :data:`RESIDUAL_BANK` row-quantizes its rows on the way in (DynQuant,
    per-token mode) and its accumulator is multiplied by each row's absmax
    before the epilogue; outputs into the int16 bank are int16, elsewhere
    int8. REQUANT: per-channel dyadic requantization (into an int8 bank,
    the KV region or the int16 bank). RESIDUAL: (acc + bias) and the
    residual row, each through its own per-channel dyadic multiplier, summed
    and clamped to int16, read-modify-written in the int16 bank.
    REQUANT_GELU: per-channel requantization to the GELU input (int8 for the
    build's ShiftGELU mode "ivit", int16 for "accurate"), ShiftGELU (x0 from
    the constants), per-tensor requantization (:data:`GELU_CONST`).
    REQUANT_SOFTMAX (ATTN_QK only): per-tensor requantization of the int8
    engine's dot products to int8 logits, Shiftmax (n = 15, x0 from the
    constants) to the build's ``probs_bits`` probabilities, into an int8
    bank (8 bits) or the int16 bank (16 bits) (:data:`SOFTMAX_CONST`).
    REQUANT_GATEMUL (decoder builds, ``Accelerator(llm=True)``; the MLP's
    up projection): per-channel requantization to int16 ``up``, then the
    gate product with the gate row read back from the destination rows
    (int16 bank, read-modify-write as RESIDUAL): SiLU or ReLU^2 (the build's
    ``llm_act``), times up, two per-tensor requantizers
    (:data:`GATEMUL_CONST`), int16 ``h`` into the same rows.
    REQUANT_ROPE (decoder builds; the q and k projections): per-channel
    requantization to int16, RoPE (rotate_half) at position ``kv_pos`` +
    the row's index within the pass with the build's loaded cos/sin table
    (the ``rope`` register window), per-tensor requantization to int8
    (:data:`ROPE_CONST`), into an int8 bank or the KV region."""
    REQUANT = 0
    REQUANT_GELU = 1
    REQUANT_SOFTMAX = 2
    RESIDUAL = 3
    REQUANT_GATEMUL = 4
    REQUANT_ROPE = 5


class ErrorCode(enum.IntEnum, shape=4):
    """``STATUS.code`` after the sequencer stopped with ``STATUS.error``."""
    NONE = 0
    OPCODE = 1        #: unknown opcode
    UNSUPPORTED = 2   #: known opcode/head/engine/epilogue this build does not implement
    BANK = 3          #: bank number out of range or of the wrong kind for the pass
    ROWS = 4          #: rows == 0 or base row + rows beyond the bank (decoder builds:
                      #: also a field the ``kv_pos`` register moves beyond 12 bits)
    SHAPE = 5         #: K or N zero or beyond the build's width, or N not a multiple of lanes
                      #: (ATTN: heads zero, heads * K or heads * N beyond the width, keys
                      #: beyond max_rows, head dim not a multiple of the int8 engine's blocks)
    CONST = 6         #: constant set beyond the constant memory (decoder builds: also a
                      #: ``uniform`` LINEAR's entry index >= max_width)
    OVERLAP = 7       #: LINEAR writes rows of its own source bank it has not read yet;
                      #: ATTN source and destination rows intersect in one bank
    UNIT = 8          #: a datapath unit raised its error flag
    PC = 9            #: program ran off the end of program memory without END
    # External memory (the AXI4 masters, :mod:`trilut.hw.axi`); each stops the
    # master that reports it until reset.
    MEM_SLVERR = 10   #: a memory read or write answered SLVERR
    MEM_DECERR = 11   #: a memory read or write answered DECERR (no slave at the address)
    MEM_TIMEOUT = 12  #: the memory made no progress for the master's ``timeout`` cycles
    MEM_COMMAND = 13  #: a memory command of zero beats, at an address not beat-aligned,
                      #: or running past the top of the address space


#: Bank number of the int16 residual bank (int8 banks are 0 .. banks - 1).
RESIDUAL_BANK = 15
#: Bank numbers of the KV region: K rows (key j = row j, the channels of all
#: heads) and V rows, int8, stored transposed for the int8 engine (one weight
#: beat per memory word). LINEAR (REQUANT) and LOAD write them, STORE reads
#: them back row by row, ATTN_QK / ATTN_AV consume them as weights.
KEY_BANK = 13
VALUE_BANK = 14
#: Largest number of int8 activation banks (0 .. 12).
MAX_BANKS = KEY_BANK

ROW_BITS = 12
DESCRIPTOR_BITS = 128

#: The descriptor: 128 bits, fields from bit 0 upwards in this order.
DESCRIPTOR = data.StructLayout({
    "opcode": unsigned(4),
    "head": unsigned(2),
    "engine": unsigned(1),
    "epilogue": unsigned(3),
    "src_bank": unsigned(4),
    "src_row": unsigned(ROW_BITS),
    "dst_bank": unsigned(4),
    "dst_row": unsigned(ROW_BITS),
    "rows": unsigned(ROW_BITS),      # M
    "k": unsigned(ROW_BITS),         # K: input row length (LOAD/STORE: row length)
    "n": unsigned(ROW_BITS),         # N: output row length
    "const": unsigned(8),            # constant set (N entries, one per output channel)
    "kv_pos": unsigned(ROW_BITS),    # decoder builds: KV position of the pass's first row
                                     # (plus the ``kv_pos`` register: KV_POS_DOC)
    "heads": unsigned(8),            # ATTN: heads looped inside the pass (K, N per head);
                                     # decoder builds' LINEAR with ``uniform``: the entry
    "reserved": unsigned(22),        # decoder builds' extra fields: LLM_FIELDS
})
assert DESCRIPTOR.size == DESCRIPTOR_BITS

#: The decoder builds' extra fields (``Accelerator(llm=True)``), a view of
#: the descriptor's ``reserved`` bits. Attention: ``causal`` (ATTN_QK: query
#: row i sees keys 0 .. kv_pos + i, zeros after them), ``kv_group`` (ATTN_QK /
#: ATTN_AV: query heads per KV head, GQA: head h reads KV head h // kv_group;
#: 0 or 1: one each) and ``kv_base`` (ATTN_QK / ATTN_AV: the KV row of key 0,
#: a layer's part of the region; a multiple of attn_lanes and attn_kpc).
#: Constants: ``uniform`` (LINEAR: every output channel reads ONE entry of the
#: set ``const``, the entry the descriptor's ``heads`` field names, instead
#: of entry c for channel c; the entry must lie below ``max_width``, else
#: CONST): a per-tensor scale (BitNet) costs one entry, and the entries of
#: many passes share one set (docs/llm.md, "Constants on decoder builds").
#: LINEAR ignores causal/kv_group/kv_base, the other opcodes ignore
#: ``uniform``; builds without ``llm`` ignore all of them.
LLM_FIELDS = data.StructLayout({"causal": unsigned(1), "kv_group": unsigned(8),
                                "kv_base": unsigned(ROW_BITS), "uniform": unsigned(1)})
assert LLM_FIELDS.size == DESCRIPTOR["reserved"].width


def llm_fields(causal=0, kv_group=0, kv_base=0, uniform=0):
    """``reserved=`` of :func:`pack_descriptor` for :data:`LLM_FIELDS`."""
    return LLM_FIELDS.const({"causal": int(causal), "kv_group": int(kv_group),
                             "kv_base": int(kv_base),
                             "uniform": int(uniform)}).as_value().value

#: Largest value of every descriptor field (for host-side checks).
FIELD_LIMITS = {name: (1 << field.width) - 1 for name, field in DESCRIPTOR}


def pack_descriptor(opcode=Opcode.END, **fields):
    """The descriptor as a 128-bit integer; unnamed fields are 0. Values are
    ints (enum members included); a value that does not fit its field raises
    ``ValueError`` naming the field."""
    fields = {"opcode": opcode, **fields}
    for name, value in fields.items():
        if name not in FIELD_LIMITS:
            raise ValueError(f"unknown descriptor field {name!r}")
        if not 0 <= int(value) <= FIELD_LIMITS[name]:
            raise ValueError(f"descriptor field {name} = {int(value)} does not fit "
                             f"{DESCRIPTOR[name].width} bits")
    return DESCRIPTOR.const({k: int(v) for k, v in fields.items()}).as_value().value


def unpack_descriptor(value):
    """A 128-bit integer -> dict of field name -> int."""
    view = data.Const(DESCRIPTOR, value)
    return {name: int(view[name]) for name, _ in DESCRIPTOR}


def _words(value, bits):
    return [(value >> (32 * i)) & 0xFFFF_FFFF for i in range(bits // 32)]


def descriptor_words(value):
    """A packed descriptor as four 32-bit AXI4-Lite words, lowest first."""
    return _words(value, DESCRIPTOR_BITS)


# --- constant memory ------------------------------------------------------

CONST_BITS = 128
M_FIELD = unsigned(M_BITS_DEFAULT)
E_FIELD_ISA = unsigned(6)           # e in [1, 62]
BIAS_FIELD = signed(32)

#: Constant entry of a REQUANT pass: ``y = clamp(((acc + bias) * m + 2**(e-1)) >> e)``,
#: negated after the clamp when ``neg`` (NORM only: a LayerNorm output that
#: carries gamma's sign, post-LN).
REQUANT_CONST = data.StructLayout({
    "m": M_FIELD, "e": E_FIELD_ISA, "neg": unsigned(1), "_r0": unsigned(9),
    "bias": BIAS_FIELD,
    "_r1": unsigned(64),
})
#: Constant entry of a RESIDUAL pass: ``x = acc + bias`` through (mx, ex), the
#: residual row through (my, ey). ``bias`` sits where REQUANT_CONST has it.
RESIDUAL_CONST = data.StructLayout({
    "mx": M_FIELD, "ex": E_FIELD_ISA, "_r0": unsigned(10),
    "bias": BIAS_FIELD,
    "my": M_FIELD, "ey": E_FIELD_ISA, "_r1": unsigned(42),
})
#: Constant entry of a LINEAR pass with the REQUANT_GELU epilogue: channel c's
#: ``(m, e, bias)`` take ``acc`` to the int8 GELU input exactly as REQUANT_CONST;
#: ``gm``, ``ge`` (GELU product -> int8) and ``x0`` (ShiftGELU constant,
#: floor(-1 / (1.702 s_g))) are per tensor and are taken from the set's entry 0.
GELU_CONST = data.StructLayout({
    "m": M_FIELD, "e": E_FIELD_ISA, "_r0": unsigned(10),
    "bias": BIAS_FIELD,
    "gm": M_FIELD, "ge": E_FIELD_ISA, "_r1": unsigned(10),
    "x0": signed(16), "_r2": unsigned(16),
})
#: Constant entry of an ATTN_QK pass (one entry, per tensor): ``(m, e)`` take
#: the int8 engine's dot products to int8 logits (``bias`` must be 0, as golden
#: has none), ``x0`` is Shiftmax's IEXP constant (``softmax_x0``). ``x0`` sits
#: where GELU_CONST has it (one latch serves both). ATTN_AV uses one
#: REQUANT_CONST entry (``attn`` m, e; bias 0).
SOFTMAX_CONST = data.StructLayout({
    "m": M_FIELD, "e": E_FIELD_ISA, "_r0": unsigned(10),
    "bias": BIAS_FIELD,
    "_r1": unsigned(32),
    "x0": signed(16), "_r2": unsigned(16),
})
#: Constant entry of a LINEAR pass with the REQUANT_GATEMUL epilogue: channel
#: c's ``(m, e, bias)`` take ``acc`` to int16 ``up`` as REQUANT_CONST; ``am``,
#: ``ae`` (act_prod -> act), ``hm``, ``he`` (act * up -> h) and ``x0`` (the SiLU's
#: IEXP constant ``act_x0``; unused for ReLU^2) are per tensor, from entry 0;
#: ``am``/``ae``/``x0`` sit where GELU_CONST has ``gm``/``ge``/``x0``.
GATEMUL_CONST = data.StructLayout({
    "m": M_FIELD, "e": E_FIELD_ISA, "_r0": unsigned(10),
    "bias": BIAS_FIELD,
    "am": M_FIELD, "ae": E_FIELD_ISA, "he": E_FIELD_ISA, "_r1": unsigned(4),
    "x0": signed(16), "hm": M_FIELD,
})
#: Constant entry of a LINEAR pass with the REQUANT_ROPE epilogue: channel c's
#: ``(m, e, bias)`` take ``acc`` to int16 as REQUANT_CONST; ``rm``, ``re`` (the
#: rotated int32 -> int8: golden ``q_rope`` / ``k_rope``) are per tensor, from
#: entry 0, where GELU_CONST has ``gm``/``ge`` (one latch serves both).
ROPE_CONST = data.StructLayout({
    "m": M_FIELD, "e": E_FIELD_ISA, "_r0": unsigned(10),
    "bias": BIAS_FIELD,
    "rm": M_FIELD, "re": E_FIELD_ISA, "_r1": unsigned(42),
})
assert (REQUANT_CONST.size == RESIDUAL_CONST.size == GELU_CONST.size == SOFTMAX_CONST.size
        == GATEMUL_CONST.size == ROPE_CONST.size == CONST_BITS)
assert (ROPE_CONST["rm"].offset, ROPE_CONST["re"].offset) \
    == (GELU_CONST["gm"].offset, GELU_CONST["ge"].offset)
assert (GATEMUL_CONST["am"].offset, GATEMUL_CONST["ae"].offset, GATEMUL_CONST["x0"].offset) \
    == (GELU_CONST["gm"].offset, GELU_CONST["ge"].offset, GELU_CONST["x0"].offset)
assert REQUANT_CONST["bias"].offset == RESIDUAL_CONST["bias"].offset
for _f in ("m", "e", "bias"):
    assert (REQUANT_CONST[_f].offset == GELU_CONST[_f].offset == SOFTMAX_CONST[_f].offset
            == GATEMUL_CONST[_f].offset == ROPE_CONST[_f].offset)
assert GELU_CONST["x0"].offset == SOFTMAX_CONST["x0"].offset


def pack_requant_const(m, e, bias=0, neg=0):
    return REQUANT_CONST.const({"m": int(m), "e": int(e), "bias": int(bias),
                                "neg": int(neg)}).as_value().value


def pack_residual_const(mx, ex, my, ey, bias=0):
    return RESIDUAL_CONST.const({"mx": int(mx), "ex": int(ex), "my": int(my), "ey": int(ey),
                                 "bias": int(bias)}).as_value().value


def pack_gelu_const(m, e, bias, gm, ge, x0):
    return GELU_CONST.const({"m": int(m), "e": int(e), "bias": int(bias), "gm": int(gm),
                             "ge": int(ge), "x0": int(x0)}).as_value().value


def pack_softmax_const(m, e, x0):
    return SOFTMAX_CONST.const({"m": int(m), "e": int(e), "x0": int(x0)}).as_value().value


def pack_gatemul_const(m, e, bias, am, ae, hm, he, x0=0):
    return GATEMUL_CONST.const({"m": int(m), "e": int(e), "bias": int(bias), "am": int(am),
                                "ae": int(ae), "hm": int(hm), "he": int(he),
                                "x0": int(x0)}).as_value().value


def pack_rope_const(m, e, bias, rm, re):
    return ROPE_CONST.const({"m": int(m), "e": int(e), "bias": int(bias), "rm": int(rm),
                             "re": int(re)}).as_value().value


def rope_words(cos, sin):
    """The ``rope`` window's words for int16 tables ``cos``, ``sin`` (positions,
    head_dim / 2), position-major: word ``pos * head_dim / 2 + j`` holds
    cos[pos, j] in bits 0-15 and sin[pos, j] in bits 16-31."""
    c = [int(v) & 0xFFFF for v in cos.reshape(-1)]
    s = [int(v) & 0xFFFF for v in sin.reshape(-1)]
    return [a | b << 16 for a, b in zip(c, s)]


def const_words(value):
    """A packed constant entry as four 32-bit words, lowest first."""
    return _words(value, CONST_BITS)


# --- control and status -------------------------------------------------------

AXIL_DATA_BITS = 32

#: CTRL (write-only): a 1 in ``start`` starts the program at descriptor 0 (ignored
#: while busy); a 1 in ``soft_reset`` returns sequencer and datapath to idle.
CTRL = data.StructLayout({"start": 1, "soft_reset": 1, "_r": 30})
#: STATUS (read-only).
STATUS = data.StructLayout({
    "busy": 1, "done": 1, "error": 1, "_r0": 3,
    "code": ErrorCode,
    # error flags (UNIT), bit 0 up: engine, requantizer, residual adder,
    # LayerNorm, ShiftGELU, GELU output requantizer, int8 engine, Shiftmax,
    # weight store overflow (a s_axis_wgt frame longer than the store's
    # depth), weight store mismatch (a LINEAR whose weight frame has another
    # number of beats than its K and N need); see UNIT_FLAGS
    "unit": unsigned(10),
    "pc": unsigned(ROW_BITS),        # prog_depth <= 2**ROW_BITS
})
#: Names of the STATUS.unit bits, bit 0 first.
UNIT_FLAGS = ("engine", "requant", "resadd", "lnorm", "gelu", "gelu_rq", "int8", "smax",
              "wstore_overflow", "wstore_mismatch")
assert len(UNIT_FLAGS) == STATUS["unit"].width
#: BUILD (read-only): the build's limits, for the host driver.
BUILD = data.StructLayout({"max_rows": unsigned(12), "max_width": unsigned(12),
                           "banks": unsigned(4), "_r": unsigned(4)})
assert CTRL.size == STATUS.size == BUILD.size == AXIL_DATA_BITS

#: Per-unit cycle counters (32 bits, cleared by CTRL.start). For each unit,
#: ``busy`` counts cycles in which it moved a beat and ``stall`` cycles of a
#: pass that uses it in which it did not.
COUNTERS = (
    ("cycles", "cycles from start to END or error"),
    ("pass_cycles", "cycles of the last finished pass, from its start to its last write"),
    ("load_busy", "LOAD: s_axis transfers taken"),
    ("load_stall", "LOAD: cycles without an s_axis transfer"),
    ("engine_busy", "LINEAR: weight beats taken by the engine"),
    ("engine_stall", "LINEAR run phase: cycles without a weight beat"),
    ("epilogue_busy", "LINEAR: results written by the epilogue"),
    ("epilogue_stall", "LINEAR run phase: cycles without a result written"),
    ("int8_busy", "ATTN: weight beats (KV words) taken by the int8 engine"),
    ("int8_stall", "ATTN run phase: cycles without a weight beat"),
    ("store_busy", "STORE: m_axis transfers"),
    ("store_stall", "STORE: cycles without an m_axis transfer"),
    ("wgt_load", "s_axis_wgt transfers taken into the weight store while busy"),
    ("wgt_overlap", "s_axis_wgt transfers taken while a NORM, LINEAR or ATTN pass runs "
                    "(weight loading overlapped with compute)"),
    ("wgt_wait", "LINEAR run phase: cycles the engine wants a weight beat the store does "
                 "not have yet (weight loading not hidden)"),
)


#: The decoder builds' ``kv_pos`` register (``RegisterMap(kv_pos=True)``).
KV_POS_DOC = (
    "KV position of the next tokens (decoder builds; bits 0-11, 0 after a hard reset, "
    "kept across soft resets): the sequencer adds it to every descriptor it fetches, to "
    "kv_pos, to a src_row / dst_row in the KV region (KEY_BANK, VALUE_BANK) and to the key "
    "count (ATTN_QK: n, ATTN_AV: k); a sum beyond 12 bits stops the program with ROWS. "
    "So one program, compiled at position 0, runs every decode step: the host advances "
    "the position with one write, written while the accelerator is idle.")


@dataclass(frozen=True)
class Register:
    name: str
    offset: int     # byte offset
    access: str     # "r", "w" or "rw"
    doc: str
    words: int = 1  # 32-bit words (windows span many)


class RegisterMap:
    """AXI4-Lite register map of one build: 32-bit registers, byte offsets.

    ``0x00`` CTRL (w), ``0x04`` STATUS (r), ``0x08`` BUILD (r), then the
    counters of :data:`COUNTERS` from ``0x10``; the program window (write-only,
    4 words per descriptor, lowest first) and the constant window (write-only,
    4 words per entry) follow, each aligned to its power-of-two size; decoder
    builds (``rope_entries`` > 0) add the RoPE table window (write-only, one
    word per entry: :func:`rope_words`; written in order from entry 0), and
    ``kv_pos`` (``kv_pos=True``; read-write, :data:`KV_POS_DOC`) after the
    counters.
    Reads of unmapped or write-only addresses return 0; writes to read-only
    addresses are ignored; every access gets an OKAY response.
    """

    def __init__(self, *, prog_depth, const_entries, rope_entries=0, kv_pos=False):
        self.prog_depth, self.const_entries = prog_depth, const_entries
        self.rope_entries = rope_entries
        regs = [Register("ctrl", 0x00, "w", "CTRL"),
                Register("status", 0x04, "r", "STATUS"),
                Register("build", 0x08, "r", "BUILD")]
        for i, (name, doc) in enumerate(COUNTERS):
            regs.append(Register(name, 0x10 + 4 * i, "r", doc))
        if kv_pos:
            regs.append(Register("kv_pos", regs[-1].offset + 4, "rw", KV_POS_DOC))
        top = regs[-1].offset + 4
        windows = []
        for name, words, doc in (
                ("prog", prog_depth * DESCRIPTOR_BITS // 32, "program memory"),
                ("const", const_entries * CONST_BITS // 32, "constant memory"),
                *([("rope", rope_entries, "RoPE cos/sin table")] if rope_entries else [])):
            size = 1 << (4 * words - 1).bit_length()
            base = -(-top // size) * size
            windows.append(Register(name, base, "w", doc, words=words))
            top = base + size
        self.registers = {r.name: r for r in regs + windows}
        self.addr_bits = max(4, (top - 1).bit_length())

    def __getitem__(self, name):
        return self.registers[name]

    def offset(self, name):
        return self.registers[name].offset

    def __iter__(self):
        return iter(self.registers.values())

    def __repr__(self):
        rows = [f"  0x{r.offset:05x} {r.access:2s} {r.name} ({r.words} words)" for r in self]
        return "RegisterMap(\n" + "\n".join(rows) + "\n)"
