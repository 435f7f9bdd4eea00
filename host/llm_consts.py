# amaranth: UnusedElaboratable=no
# (an Accelerator built from a parameter dict is a host-side helper here)
"""Where a decoder model's constants live on a decoder build for a whole run
(docs/llm.md, "Constants on decoder builds"): :func:`const_plan` places
every segment's constant sets once (each RMSNorm gamma set a physical set
of its own, the attention's one-entry constants at entry 0 of the shared
sets, every ``uniform`` LINEAR's entry in shared set 0), and
:meth:`ConstPlan.place` moves a compiled segment
(:func:`~trilut.host.llm_compiler.compile_layer`'s ``plan=``) there, so
that a decode step finds its constants where the step before left them and
the driver sends none again (:meth:`~trilut.host.driver.Driver.write_consts`).
"""
from __future__ import annotations

import copy

from amaranth.lib import data

from ..hw.isa import LLM_FIELDS, Opcode, pack_descriptor, unpack_descriptor
from .compiler import CompileError, _accelerator, _uniform_entries_max
from .llm_compiler import compile_layer

__all__ = ["ConstPlan", "const_plan"]


def _const_use(f):
    """How the pass of descriptor fields ``f`` reads its constant set: "attn"
    (entry 0 only), "uniform" (the one entry ``heads`` names), "full" (one
    per channel: LINEAR, NORM) or None (no constants)."""
    op = f["opcode"]
    if op in (Opcode.ATTN_QK, Opcode.ATTN_AV):
        return "attn"
    if op == Opcode.LINEAR and data.Const(LLM_FIELDS, f["reserved"]).uniform:
        return "uniform"
    return "full" if op in (Opcode.LINEAR, Opcode.NORM) else None


class ConstPlan:
    """Where a model's constants live on a build for a whole run
    (:func:`const_plan`): every per-channel set (the RMSNorm gammas; a LINEAR
    whose entries differ) in a physical set of its own, the attention's
    one-entry constants at entry 0 of the shared sets (ATTN reads entry 0)
    and every uniform LINEAR's entry in shared set 0 from entry 1 on.
    ``resident``: every segment writes the same contents into the sets it
    uses, so after the first step the driver sends none
    (:meth:`~trilut.host.driver.Driver.write_consts`); otherwise ``note``
    says why (more attention constants than shared sets: entry 0 of a shared
    set is rewritten by the segments that share it)."""

    def __init__(self, full, ones, uniform, first_shared, shared, resident, note):
        self.full, self.ones, self.uniform = full, ones, uniform
        self.first_shared, self.shared = first_shared, shared
        self.resident, self.note = resident, note
        self.sets = first_shared + shared

    def _one_set(self, entry):
        return self.first_shared + self.ones[entry] % self.shared

    def place(self, seg):
        """``seg`` (compiled with per-segment sets) with its descriptors and
        constants moved to this plan's sets."""
        sets, used = dict(seg.consts), {}
        out = copy.copy(seg)
        out.descriptors = []
        for d in seg.descriptors:
            f = unpack_descriptor(d)
            use, c = _const_use(f), f["const"]
            if use == "attn":
                e = sets[c][0]
                f["const"] = self._one_set(e)
                if used.get(f["const"]) not in (None, e):
                    raise CompileError(f"two attention constants of one segment in shared set "
                                       f"{f['const']}")
                used[f["const"]] = e
            elif use == "uniform":
                f.update(const=self.first_shared, heads=1 + self.uniform[sets[c][f["heads"]]])
                used.setdefault(self.first_shared, None)
            elif use == "full":
                f["const"] = self.full[tuple(sets[c])]
                used[f["const"]] = "full"
            out.descriptors.append(pack_descriptor(**f))
        full = {v: list(k) for k, v in self.full.items()}
        owner = {}                      # a shared set's entry 0 when its segment reads none
        for e in self.ones:
            owner.setdefault(self._one_set(e), e)
        out.consts = []
        for s in sorted(used):
            if s in full:
                out.consts.append((s, full[s]))
                continue
            e0 = used[s] if used[s] is not None else owner.get(s, 0)
            out.consts.append((s, [e0] + (list(self.uniform) if s == self.first_shared else [])))
        return out


def const_plan(params, accel):
    """The :class:`ConstPlan` of ``params`` on the build ``accel``, or None
    with a reason (``(None, note)``) when the per-channel sets alone leave no
    shared set: then every segment keeps its own sets (compile_layer's
    default), rewritten per segment. Returns ``(plan, note)``."""
    acc = _accelerator(accel)
    layers = params.cfg.layers
    segs = [seg for li in range(layers)
            for seg in compile_layer(params, li, acc, 1, 0, final=li == layers - 1, plan=None)]
    full, ones, uniform = {}, {}, {}
    for seg in segs:
        sets = dict(seg.consts)
        for d in seg.descriptors:
            f = unpack_descriptor(d)
            use, c = _const_use(f), f["const"]
            if use == "attn":
                ones.setdefault(sets[c][0], len(ones))
            elif use == "uniform":
                uniform.setdefault(sets[c][f["heads"]], len(uniform))
            elif use == "full":
                full.setdefault(tuple(sets[c]), len(full))
    n_sets, most = acc.const_sets, _uniform_entries_max(acc)
    per_seg = max(sum(_const_use(unpack_descriptor(d)) == "attn" for d in seg.descriptors)
                  for seg in segs)
    shared = min(max(len(ones), 1), n_sets - len(full))
    what = (f"{len(full)} per-channel sets, {len(ones)} attention constants (each at entry 0 "
            f"of a set), {len(uniform)} uniform entries; const_sets = {n_sets}")
    if shared < max(per_seg, 1) or 1 + len(uniform) > most:
        return None, f"constants per segment: {what} do not fit one placement"
    resident = len(ones) <= shared
    note = (f"resident: {what}" if resident else
            f"not all resident: {what}: entry 0 of a shared set is rewritten by the "
            f"segments that share it")
    plan = ConstPlan(full, ones, uniform, len(full), shared, resident, note)
    try:
        for seg in segs:
            plan.place(seg)
    except CompileError as exc:
        return None, f"constants per segment: {what}: {exc}"
    return plan, note
