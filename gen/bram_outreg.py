"""ECP5 block RAM output registers: a netlist pass between Yosys and nextpnr.

Yosys maps memories to DP16KD blocks with ``REGMODE = NOREG``: it does not
infer the block's own output register. Every read then pays the block's
clock-to-output, 5.83 ns of a 10 ns cycle in nextpnr-ecp5's timing model,
before the routing to the register the design puts after the read (the
accelerator's "RAM output registers", ``delay(m, port.data, 1)``), which
the placer may put anywhere. With ``REGMODE = OUTREG`` nextpnr times the
block's outputs at 0.96 ns (measured with nextpnr-ecp5 0.11 on a
one-block design: 116 MHz with NOREG, 272 MHz with OUTREG).

:func:`absorb_output_registers` moves such registers into their blocks.
A read side of a DP16KD qualifies when each of its used outputs drives
exactly one flip-flop's data input and nothing else, and all those
flip-flops

* are clocked by the block's read clock (``CLKMUX = CLK``, not inverted),
* have no set or reset (``LSR`` tied to 0) and start at 0 (``REGSET =
  RESET``), as the block's output register does (its ``RST`` must be
  tied to 0 too),
* share one clock enable, or have none,
* feed no multiplier (MULT18X18D): such a register stays in the fabric,
  where the placer puts it beside the multiplier, whose inputs are
  combinational (3.9 ns to its output register-less product). Moved into
  the block it made the top's slowest path: 6.9 ns of routing from the int8
  engine's row store to the DSP row, then the multiply (14.2 ns, seed 1).

Then ``REGMODE_x = OUTREG``, ``OCEx`` takes that enable (1 if none), the
block's outputs take the flip-flops' output nets and the flip-flops go.
Cycle for cycle the block's outputs hold what the flip-flops held: the
read latch (NOREG's output) loads on ``CEx`` as before, the output
register loads from it on ``OCEx``, as the flip-flops did from the latch.
In 36-bit (pseudo dual port) mode both halves, ``DOA`` and ``DOB``, are the
read port: both qualify and move, or neither does.

Memories behind a select (a memory Yosys splits over several blocks by
depth, read through a LUT multiplexer) do not qualify: the register is
after the select. The accelerator reads those through a register beside
each block first (``hw/memories.py``'s blocked memories).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

__all__ = ["RULES", "absorb_output_registers", "absorb_file"]

#: The rules' version, part of the result cache's key (trilut.gen.sweep):
#: bumped whenever what moves changes. 2: registers feeding a multiplier stay.
RULES = 2


def _int_param(value) -> int:
    """A Yosys JSON integer parameter (a binary string, or an int)."""
    return value if isinstance(value, int) else int(str(value).strip() or "0", 2)


def _str_param(cell, name, default=""):
    return str(cell["parameters"].get(name, default)).strip()


def _read_sides(cell):
    """The DP16KD's read sides, grouped as they must move: [["B"]] or
    [["A"], ["B"]] for true dual port, [["A", "B"]] for 36-bit mode."""
    if _int_param(cell["parameters"].get("DATA_WIDTH_B", 18)) == 36:
        return [["A", "B"]]
    return [["A"], ["B"]]


def absorb_output_registers(netlist: dict) -> dict:
    """Move qualifying flip-flops into their DP16KD's output registers in
    ``netlist`` (Yosys JSON, modified in place). Returns counts:
    ``blocks`` (DP16KD with at least one side moved), ``sides``,
    ``flip_flops`` (deleted), ``dp16kd`` (all blocks seen)."""
    stats = {"dp16kd": 0, "blocks": 0, "sides": 0, "flip_flops": 0}
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        if not any(c["type"] == "DP16KD" for c in cells.values()):
            continue
        sinks = defaultdict(list)         # net bit -> [(cell, port)] of the inputs it drives
        for name, cell in cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port) == "input":
                    for bit in bits:
                        if isinstance(bit, int):
                            sinks[bit].append((name, port))
        for port in module.get("ports", {}).values():
            for bit in port["bits"]:
                if isinstance(bit, int):
                    sinks[bit].append((None, None))
        for name in [n for n, c in cells.items() if c["type"] == "DP16KD"]:
            stats["dp16kd"] += 1
            moved = 0
            for group in _read_sides(cells[name]):
                n = _absorb(cells, name, group, sinks)
                if n:
                    stats["sides"] += len(group)
                    stats["flip_flops"] += n
                    moved += 1
            stats["blocks"] += bool(moved)
    return stats


def _absorb(cells, name, group, sinks) -> int:
    """Move the flip-flops after the block ``name``'s outputs on sides
    ``group`` if they qualify (module docstring); the number moved."""
    ram = cells[name]
    conn = ram["connections"]
    read_clk = conn.get("CLKB" if group == ["A", "B"] else f"CLK{group[0]}")
    if read_clk is None or any(_str_param(ram, f"REGMODE_{s}", "NOREG") != "NOREG"
                               or conn.get(f"RST{s}", ["0"]) != ["0"] for s in group):
        return 0
    if group == ["A", "B"] and conn.get("CLKA") != read_clk:
        return 0
    if any(_str_param(ram, f"CLK{s}MUX", f"CLK{s}") != f"CLK{s}" for s in group):
        return 0
    outs = []                             # (block port, flip-flop name)
    enable = None
    for side in group:
        for port, bits in conn.items():
            if not port.startswith(f"DO{side}") or not isinstance(bits[0], int):
                continue
            users = sinks.get(bits[0], [])
            if not users:
                continue                  # an unused output
            if len(users) != 1 or users[0][1] != "DI":
                return 0
            ff = cells[users[0][0]]
            if ff["type"] != "TRELLIS_FF" or not _plain_ff(ff, read_clk):
                return 0
            if any(cells[user]["type"] == "MULT18X18D"
                   for bit in ff["connections"]["Q"] for user, _ in sinks.get(bit, [])
                   if user is not None):
                return 0
            ce = ["1"] if _str_param(ff, "CEMUX", "1") == "1" else ff["connections"]["CE"]
            if enable is None:
                enable = ce
            elif ce != enable:
                return 0
            outs.append((port, users[0][0]))
    if not outs:
        return 0
    for side in group:
        ram["parameters"][f"REGMODE_{side}"] = "OUTREG"
        conn[f"OCE{side}"] = list(enable)
    for port, ff_name in outs:
        conn[port] = list(cells[ff_name]["connections"]["Q"])
        del cells[ff_name]
    return len(outs)


def _plain_ff(ff, clk) -> bool:
    """A TRELLIS_FF on ``clk`` without set/reset that starts at 0, with its
    clock enable either unused or a plain (not inverted) net."""
    c = ff["connections"]
    return (c.get("CLK") == clk and _str_param(ff, "CLKMUX", "CLK") == "CLK"
            and c.get("LSR", ["0"]) == ["0"] and _str_param(ff, "LSRMUX", "LSR") == "LSR"
            and _str_param(ff, "REGSET", "RESET") == "RESET"
            and _str_param(ff, "CEMUX", "1") in ("1", "CE")
            and (_str_param(ff, "CEMUX", "1") == "1" or isinstance(c.get("CE", [None])[0], int)))


def absorb_file(path: str | Path) -> dict:
    """:func:`absorb_output_registers` on a Yosys JSON netlist file,
    rewritten in place; returns the counts."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    stats = absorb_output_registers(netlist)
    path.write_text(json.dumps(netlist))
    return stats


if __name__ == "__main__":        # python -m trilut.gen.bram_outreg NETLIST.json
    import sys

    for arg in sys.argv[1:]:
        print(arg, absorb_file(arg))
