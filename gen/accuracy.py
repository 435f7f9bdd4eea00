"""Accuracy of the integer units against their float counterparts.

``python -m trilut.gen.accuracy --out docs`` measures the golden models of
Shiftmax, ShiftGELU (both modes), integer LayerNorm and dyadic requantization
against float softmax, exact GELU (x * Phi(x)), float LayerNorm (before
gamma/beta) and a float multiply; prints a Markdown table (unit, setting, max
and mean absolute error, in float units of the output), writes
``<out>/accuracy.json`` and error plots to ``<out>/img/``. Deterministic
(fixed seed); docs/nonlinear.md quotes its output.

It also measures the built-in digits model on its 359 held-out images
(``digits`` in the JSON; ``--no-digits`` skips it): float activations with
the ternary weights (the reference), the encoder-only integer path (the
host embeds and applies the head in float) and the all-integer path the
accelerator runs (int8 features in, int16 logits out), with how often the
integer predictions agree with the float ones; docs/encoder.md quotes it.
"""

import argparse
import json
import math
import pathlib

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)

from trilut.golden import nonlinear as nl  # noqa: E402
from trilut.golden.quant import requant_params, requantize  # noqa: E402

SEED = 2024
SOFTMAX_SCALES = tuple(2.0**-k for k in range(2, 6))
SOFTMAX_LENGTHS = (16, 64, 197)
SOFTMAX_ROWS = 1000                     # random int8 logit rows per (length, scale)
GELU_IVIT_SCALE = 1 / 16                # int8 covers [-8, 8)
GELU_ACCURATE_SCALES = (2.0**-12, 2.0**-11)   # int16 covers [-8, 8) and [-16, 16)
GELU_ACCURATE_NS = tuple(range(8, 17))  # n sweep of the accurate mode (SPEC default 16)
LAYERNORM_ROWS = 500
REQUANT_M_BITS = (8, 16, 24)

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(v):
    """Exact GELU, v * Phi(v), element-wise."""
    return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)).astype(np.float64))


def softmax(v):
    """Float softmax over the last axis."""
    p = np.exp(v - v.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def _row(unit, setting, approx, exact):
    """One table row: max and mean absolute error of approx against exact."""
    err = np.abs(np.asarray(approx, np.float64) - exact)
    return {"unit": unit, "setting": setting,
            "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean())}


def _pow2(s):
    return f"2^{int(math.log2(s))}"


def measure_shiftmax(rng, plots):
    """Shiftmax vs float softmax: random int8 logits, rows of 16..197, s = 2^-2..2^-5."""
    rows = []
    for out_bits in (8, 16):
        for length in SOFTMAX_LENGTHS:
            got, want, per_scale = [], [], {}
            for s in SOFTMAX_SCALES:
                x = rng.integers(-128, 128, (SOFTMAX_ROWS, length))
                y = nl.shiftmax(x, s, out_bits=out_bits) / 2 ** (out_bits - 1)
                p = softmax(x * s)
                per_scale[_pow2(s)] = _row("", "", y, p)["max_abs_err"]
                got.append(y.ravel())
                want.append(p.ravel())
                if length == max(SOFTMAX_LENGTHS):
                    plots.setdefault(f"shiftmax{out_bits}", []).append((s, p.ravel(), y.ravel()))
            row = _row("shiftmax", f"int8 logits, L={length}, s=2^-2..2^-5, {out_bits}-bit out",
                       np.concatenate(got), np.concatenate(want))
            row["max_abs_err_per_scale"] = per_scale
            rows.append(row)
    return rows


def measure_shiftgelu(plots):
    """ShiftGELU vs exact GELU, I-ViT mode on int8 and accurate mode on int16 sweeps."""
    rows = []
    s = GELU_IVIT_SCALE
    x = np.arange(-128, 128)
    cases = [("sweep as one row (row max 7.94)", x[None, :]),
             ("each x its own row (row max = x)", x[:, None])]
    for name, rows_in in cases:
        y = nl.shiftgelu(rows_in, s).reshape(-1) * nl.shiftgelu_scale(s, 8)
        rows.append(_row("shiftgelu ivit", f"int8, s=1/16, x in [-8, 8), {name}", y, gelu(x * s)))
        plots.setdefault("gelu_ivit", []).append((name, x * s, y))
    # the failure SPEC 4.3 describes: a row max of 25 (s = 2^-2) flattens negative x
    s_wide = 2.0**-2
    xw = np.arange(-32, 33)
    y = nl.shiftgelu(np.append(xw, 100)[None, :], s_wide)[0, :-1] * nl.shiftgelu_scale(s_wide, 8)
    rows.append(_row("shiftgelu ivit", "int8, s=2^-2, x in [-8, 8], row max 25", y, gelu(xw * s_wide)))
    plots["gelu_ivit"].append(("s=2^-2, row max 25", xw * s_wide, y))

    xa = np.arange(-2**15, 2**15)
    sweep = []
    for s16 in GELU_ACCURATE_SCALES:
        exact = gelu(xa * s16)
        for n in GELU_ACCURATE_NS:
            y = nl.shiftgelu(xa, s16, n=n, mode="accurate") * nl.shiftgelu_scale(s16, 16)
            r = _row("shiftgelu accurate", f"int16, s={_pow2(s16)}, n={n}, 16-bit sigmoid", y, exact)
            sweep.append(r)
            if n == nl.GELU_DEFAULTS["accurate"][0]:
                rows.append(dict(r, setting=f"int16, s={_pow2(s16)} (x in [{xa[0] * s16:g}, "
                                            f"{-xa[0] * s16:g})), n=16, 16-bit sigmoid"))
            if n in (10, 16):
                plots.setdefault("gelu_accurate", []).append((f"s={_pow2(s16)}, n={n}",
                                                              xa * s16, y - exact))
    return rows, sweep


def measure_layernorm(rng, plots):
    """int_layernorm (times its scale) vs float LayerNorm without gamma/beta or eps."""
    rows = []
    cases = [("int8, C=384", 384, 30.0, 127, 0), ("int8, C=768", 768, 30.0, 127, 0),
             ("int16, C=384, 4 outlier channels x10", 384, 1500.0, 2**15 - 1, 4)]
    for name, c, std, lim, outliers in cases:
        v = rng.normal(0.0, std, (LAYERNORM_ROWS, c)) + rng.normal(0.0, std, (LAYERNORM_ROWS, 1))
        v[:, :outliers] *= 10
        x = np.clip(np.round(v), -lim - 1, lim).astype(np.int64)
        exact = (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)
        z = nl.int_layernorm(x) * nl.int_layernorm_scale(c)
        rows.append(_row("int_layernorm", f"{name}, normalized output", z, exact))
        plots.setdefault("layernorm", []).append((name, exact.ravel(), (z - exact).ravel()))
    return rows


def measure_requantize(rng):
    """Dyadic requantize to int8 vs the float product acc * M (clamped), per m_bits."""
    rows = []
    acc = np.round(rng.normal(0.0, 2**12, 20_000)).astype(np.int64)
    ratios = 127 / np.abs(acc).max() * 2.0 ** rng.uniform(-3, 0, 64)
    for m_bits in REQUANT_M_BITS:
        got, want = [], []
        for ratio in ratios:
            m, e = requant_params(float(ratio), m_bits=m_bits)
            got.append(requantize(acc, m, e, m_bits=m_bits))
            want.append(np.clip(acc * ratio, -128, 127))
        rows.append(_row("requantize", f"int32 acc -> int8, M_BITS={m_bits} (error in LSB)",
                         np.concatenate(got), np.concatenate(want)))
    return rows


def _plot(plots, img):
    """Write the error plots; returns the file names."""
    img.mkdir(parents=True, exist_ok=True)
    names = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
    for ax, bits in zip(axes, (8, 16)):
        for s, p, y in plots[f"shiftmax{bits}"]:
            err = np.abs(y - p)
            keep = (np.arange(err.size) % 7 == 0) | (err >= err.max() / 2)   # thin, keep the worst
            ax.plot(p[keep], err[keep], ".", ms=2, label=f"s={_pow2(s)}")
        ax.set(title=f"shiftmax, L=197, {bits}-bit output", xlabel="float softmax probability",
               ylabel="|error|")
        ax.legend(markerscale=4)
    names.append(_save(fig, img / "shiftmax_error.png"))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, v, y in plots["gelu_ivit"]:
        top.plot(v, y, label=name)
        bottom.plot(v, y - gelu(v), label=name)
    xs = np.linspace(-8, 8, 401)
    top.plot(xs, gelu(xs), "k--", lw=1, label="exact GELU")
    top.set(title="ShiftGELU, I-ViT mode (int8)", ylabel="output")
    bottom.set(xlabel="x", ylabel="error")
    top.legend(fontsize=8)
    names.append(_save(fig, img / "shiftgelu_ivit.png"))

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, v, err in plots["gelu_accurate"]:
        ax.plot(v, err, lw=0.8, label=name)
    ax.set(title="ShiftGELU, accurate mode (int16, 16-bit sigmoid): error", xlabel="x",
           ylabel="error")
    ax.legend(fontsize=8)
    names.append(_save(fig, img / "shiftgelu_accurate.png"))

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, exact, err in plots["layernorm"]:
        ax.plot(exact[::5], err[::5], ".", ms=2, label=name)
    ax.set(title="int_layernorm: normalized output error", xlabel="float normalized value",
           ylabel="error")
    ax.legend(markerscale=4, fontsize=8)
    names.append(_save(fig, img / "layernorm_error.png"))
    return names


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def format_table(rows):
    """Markdown table of unit, setting, max and mean absolute error."""
    lines = ["| unit | setting | max abs err | mean abs err |", "|---|---|---|---|"]
    lines += [f"| {r['unit']} | {r['setting']} | {r['max_abs_err']:.4g} | {r['mean_abs_err']:.3g} |"
              for r in rows]
    return "\n".join(lines)


def measure_digits():
    """The digits model's test accuracy three ways (see the module docstring)."""
    from trilut.host.models.digits.pipeline import DigitsPipeline
    p = DigitsPipeline()
    x, y = p.x_test, p.y_test
    pred = {"float": p.classify_float(x), "integer_encoder": p.classify_golden(x),
            "integer_all": p.classify_integer(x)}
    out = {"images": int(len(y))}
    out.update({f"accuracy_{k}": round(float(np.mean(v == y)), 4) for k, v in pred.items()})
    out.update({f"agree_{k}_float": round(float(np.mean(pred[k] == pred["float"])), 4)
                for k in ("integer_encoder", "integer_all")})
    return out


def run(out_dir, digits=False):
    """Measure every unit (and with ``digits`` the digits model), write
    accuracy.json and img/*.png under out_dir; return the results."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    plots = {}
    gelu_rows, n_sweep = measure_shiftgelu(plots)
    results = {
        "seed": SEED,
        "rows": (measure_shiftmax(rng, plots) + gelu_rows + measure_layernorm(rng, plots)
                 + measure_requantize(rng)),
        "gelu_accurate_n_sweep": n_sweep,
    }
    if digits:
        results["digits"] = measure_digits()
    results["plots"] = _plot(plots, out / "img")
    (out / "accuracy.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="output directory (default: docs)")
    parser.add_argument("--no-digits", action="store_true",
                        help="skip the digits model's accuracy (about 30 s)")
    args = parser.parse_args(argv)
    results = run(args.out, digits=not args.no_digits)
    print(format_table(results["rows"]))
    if "digits" in results:
        d = results["digits"]
        print("\ndigits model, " + ", ".join(f"{k} {v}" for k, v in d.items()))
    print("\nShiftGELU accurate mode, n sweep:")
    print(format_table(results["gelu_accurate_n_sweep"]))


if __name__ == "__main__":
    main()
