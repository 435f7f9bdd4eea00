# constraints/kv260.xdc - clock constraint of the trilut accelerator top for
# AMD Vivado (KV260 / XCK26). gen/build.py copies it into the RTL package as
# trilut_kv260.xdc with @PERIOD_NS@ / @FREQ_MHZ@ replaced by the requested
# clock (trilut build --board kv260 --freq MHZ).
#
# The top has a single clock port, `clk` (every register, both AXI4-Stream
# ports, the AXI4-Lite port and the HP0 read master are on it) and a
# synchronous active-high reset `rst`. This constraint is what an out-of-context synthesis of the module
# needs. Inside a block design the clock comes from the PS (pl_clk0), whose
# own constraint Vivado derives; this file is then not needed (keep it out of
# the block design's constraint set, or Vivado warns about a second clock on
# the same net).
create_clock -name trilut_clk -period @PERIOD_NS@ [get_ports clk]
# @FREQ_MHZ@ MHz. All I/O of the module is internal to the block design:
# no input/output delays are constrained.
