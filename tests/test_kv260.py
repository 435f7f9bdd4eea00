# amaranth: UnusedElaboratable=no
"""The KV260 top (hw/kv260.py) and its PYNQ host device (host/pynq.py):
construction checks, the register map, and the Verilator model driven by
the real PynqDevice + Driver through a simulated pynq (sim/tb_kv260.py):
a small encoder block with its weights resident in the simulated DDR,
bit-exact with golden; a wrong model caught; SLVERR and a memory that never
answers stop with their error codes. One build (xdist group)."""
import pytest

from trilut.gen.kv260bench import PARAMS      # one small build for every simulation test
from trilut.hw.isa import ErrorCode
from trilut.hw.kv260 import MEMSTATUS, Kv260Map, Kv260Top
from trilut.hw.top import Accelerator
from trilut.sim import tb_kv260
from trilut.sim.runner import SimFailure


@pytest.mark.parametrize("kw, exc, match", [
    (dict(accel="top"), TypeError, "accel"),
    (dict(data_bits=256), ValueError, "data_bits"),
    (dict(addr_bits=50), ValueError, "addr_bits"),
    (dict(accel=dict(PARAMS, axis_bytes=8)), ValueError, "axis_bytes"),
])
def test_bad_parameters_rejected(kw, exc, match):
    with pytest.raises(exc, match=match):
        Kv260Top(**{"accel": PARAMS, **kw})


def test_register_map():
    """The memory port's window sits above the accelerator's whole map."""
    acc = Accelerator(**PARAMS)
    regs = Kv260Map(acc.regs)
    top = max(r.offset + 4 * r.words for r in acc.regs)
    assert regs.mem_base >= top and regs.mem_base == 1 << acc.regs.addr_bits
    assert regs.offset("status") == acc.regs.offset("status")
    assert regs.offset("feed_len") == regs.mem_base + 8
    assert Kv260Top(accel=acc).map.addr_bits == acc.regs.addr_bits + 1
    st = MEMSTATUS.const({"error": 1, "code": ErrorCode.MEM_TIMEOUT, "free": 5})
    assert int(st.code) == ErrorCode.MEM_TIMEOUT and int(st.free) == 5


@pytest.mark.parametrize("kw, match", [(dict(memory_bytes=100), "memory_bytes"),
                                       (dict(data_bits=256), "data_bits")])
def test_pynq_device_bad_arguments(kw, match):
    from trilut.host.pynq import PynqDevice
    with pytest.raises(ValueError, match=match):
        PynqDevice("x.bit", **kw)


def test_pynq_missing_is_a_clear_error(monkeypatch):
    import builtins

    from trilut.host.pynq import PynqDevice
    real = builtins.__import__

    def no_pynq(name, *a, **k):
        if name == "pynq":
            raise ImportError("No module named 'pynq'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pynq)
    with pytest.raises(ImportError, match=r"trilut\[kv260\]"):
        PynqDevice("x.bit")


@pytest.mark.sim
@pytest.mark.xdist_group("kv260")
@pytest.mark.parametrize("testcase", ["resident_block", "slverr_region", "memory_never_answers"])
def test_kv260_matches_golden(testcase):
    assert tb_kv260.run(PARAMS, testcase=testcase) == 1


@pytest.mark.sim
@pytest.mark.xdist_group("kv260")
def test_wrong_model_is_caught():
    with pytest.raises(SimFailure, match="mismatches"):
        tb_kv260.run(PARAMS, testcase="resident_block", broken=True)
