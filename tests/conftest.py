"""Suite-wide test order: the longest work first.

``make test`` runs ``pytest -n 2 --dist loadgroup`` with
``--no-loadscope-reorder`` (pyproject.toml), so pytest-xdist hands out the
work units (an ``xdist_group``, else one test) in collection order. A long
unit handed out last sets the wall time, so the units below, measured as the
slowest from a fresh clone (Verilator builds and long simulations; see
docs/conventions.md, "Test suite time"), are collected first, longest
first; everything else keeps its order behind them and fills the two
workers at the end.
"""

#: xdist groups or node id prefixes, longest first (a fresh clone, 2 workers).
LONGEST_FIRST = [
    "top-minilm",                       # test_hf_layer: the MiniLM-width top
    "bridge-uart",                      # test_device: four pin-level pty runs
    "accel-top",                        # test_hw_top: the whole-top cocotb cases
    "accel-llm",                        # test_llm_top: decoder build, prefill + decode
    "accel-llm-bridge",                 # test_llm_top: hf-generate through SimDevice
    "demo",                             # test_demo: few images through the host
    "bridge-sim",                       # test_device: the harness build and runs
    "bridge-cocotb",                    # test_bridge: the UART top in cocotb
    "accel-top-token",
    "accel-llm-relu2",
    "tests/test_hw_layernorm.py::test_ecp5_timing_and_resources",   # place and route
    "tests/test_hw_matmul.py",
    "tests/test_hw_dynquant.py",
    "tests/test_hw_int8mm.py",
    "tests/test_hw_shiftgelu.py",
    "tests/test_hw_requant.py",
    "tests/test_hw_layernorm.py",
    "tests/test_hw_shiftmax.py",
    "tests/test_hw_wide_epilogue.py",
    "tests/test_stress.py",
    "tests/test_memlink.py",
    "tests/test_llama.py",
    "tests/test_sweep.py",
    "tests/test_kv260.py",
    "tests/test_llm_sdram.py",
    "tests/test_decodebench.py",
]


def _rank(item):
    group = item.get_closest_marker("xdist_group")
    keys = [group.args[0]] if group and group.args else []
    keys.append(item.nodeid)
    for i, key in enumerate(LONGEST_FIRST):
        if any(k == key or (key.startswith("tests/") and k.startswith(key)) for k in keys):
            return i
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)       # stable: the collection order within each rank
