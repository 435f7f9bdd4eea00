"""The sweep layer (trilut.gen.sweep): result cache, executors (local pool
and dask.distributed), seeds, failures, and gen/'s one-way imports."""
import ast
import json
from pathlib import Path

import pytest

from trilut.gen import sweep
from trilut.gen.cli import main
from trilut.gen.sweep import (TIMING_FIELDS, ResultCache, SweepFailure, failure_summary,
                              fmax_spread, synth_many, synth_unit)
from trilut.gen.units import UNITS

GEN = Path(sweep.__file__).resolve().parent

# A tiny unit: a few seconds of Yosys + nextpnr.
TINY = [("requant ch1", "requant", {"channels": 1})]


def _strip(record):
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


# --- imports ---------------------------------------------------------------------

def _gen_imports():
    """{module: set of gen modules it imports (anywhere, functions included)}."""
    names = {p.stem for p in GEN.glob("*.py")}
    graph = {}
    for path in GEN.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level == 1:
                    deps |= {mod.split(".")[0]} if mod else {a.name for a in node.names}
                elif mod.startswith("trilut.gen."):
                    deps.add(mod.split(".")[2])
                elif mod == "trilut.gen":
                    deps |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names
                         if a.name.startswith("trilut.gen.")}
        graph[path.stem] = deps & names - {path.stem}
    return graph


def _cycle(graph):
    """One import cycle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, stack + [dep])
                if found:
                    return found
        state[node] = "done"
        return None
    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_gen_imports_point_one_way():
    """cli -> commands -> flows: nothing imports the CLI back, and gen/ has no
    import cycle (functions' local imports included)."""
    graph = _gen_imports()
    assert "sweep" in graph["report"] and "sweep" in graph["bench"] and "sweep" in graph["build"]
    assert [m for m, deps in graph.items() if "cli" in deps] == []
    assert _cycle(graph) is None


def test_cycle_check_can_fail():
    """The checks above catch the circle this module used to have."""
    graph = _gen_imports()
    graph["report"] = graph["report"] | {"cli"}
    assert _cycle(graph) == ["cli", "report", "cli"]


# --- cache, mapper, seeds (no tools) -------------------------------------------

def test_cache_key_and_atomic_records(tmp_path):
    cache = ResultCache(tmp_path / "c")
    opts = dict(target="ecp5-85f", mapper="abc9", freq_mhz=100.0, seed=1)
    key = cache.key("module a; endmodule", opts)
    assert key == cache.key("module a; endmodule", dict(opts))
    assert len({key, cache.key("module b; endmodule", opts),
                cache.key("module a; endmodule", dict(opts, seed=2)),
                cache.key("module a; endmodule", dict(opts, mapper="abc"))}) == 4
    assert cache.get(key) is None
    src = tmp_path / "x.bit"
    src.write_bytes(b"\x00\xff")
    cache.put(key, {"lut4": 7}, files={".bit": src})
    assert cache.get(key) == {"lut4": 7} and cache.path(key, ".bit").read_bytes() == b"\x00\xff"
    assert [p.name for p in (tmp_path / "c").rglob(".*")] == []      # no temporary left
    off = ResultCache(None)
    off.put(key, {"lut4": 7})
    assert off.get(key) is None


def test_default_mapper_per_unit(monkeypatch, tmp_path, capsys):
    """The accelerator tops map with classic ABC, everything else with ABC9;
    `trilut synth --unit top` with no flags uses it, and the report says so."""
    assert {u for u in UNITS if UNITS[u].mapper == "abc"} == {"top", "top-minilm"}
    assert sweep.default_mapper("top") == "abc" and sweep.default_mapper("tlmm") == "abc9"
    assert sweep.default_mapper("top", "xcup") == "abc9"
    seen = []

    def fake(verilog, top, target, *, mapper, **kw):
        seen.append(mapper)
        return {"unit": top, "mapper": mapper, "lut4": 1, "fmax_mhz": 50.0}
    monkeypatch.setattr(sweep, "synthesize", fake)
    monkeypatch.chdir(tmp_path)
    for unit in ("top", "requant"):
        out = tmp_path / f"{unit}.json"
        assert main(["synth", "--unit", unit, "--no-cache", "--json", str(out)]) == 0
        assert json.loads(out.read_text())["mapper"] == seen[-1]
    assert seen == ["abc", "abc9"]
    assert main(["synth", "--unit", "requant", "--mapper", "abc", "--no-cache"]) == 0
    assert seen[-1] == "abc"


def test_fmax_spread():
    recs = [{"fmax_mhz": f} for f in (120.0, 101.5, 130.25)]
    assert fmax_spread(recs) == {"fmax_min": 101.5, "fmax_median": 120.0, "fmax_max": 130.25}
    assert fmax_spread(recs[:2])["fmax_median"] == 110.75
    assert fmax_spread([{"status": "failed"}])["fmax_median"] is None


def test_bad_sweep_arguments_are_clean_errors(tmp_path, capsys):
    assert main(["report", "--sweep", "--seeds", "1,x", "--out", str(tmp_path)]) == 2
    assert "--seeds expects comma-separated integers" in capsys.readouterr().err
    assert main(["report", "--sweep", "--jobs", "0", "--groups", "2", "--tables", "1",
                 "--lanes", "2", "--out", str(tmp_path)]) == 2
    assert "--jobs must be a positive integer" in capsys.readouterr().err


def test_failed_configurations_are_reported_not_dropped(tmp_path, capsys):
    """A configuration that fails on its worker (here: before any tool runs)
    is a row with status failed; the others and the outputs still come, and
    the command exits non-zero naming it."""
    out = tmp_path / "s"
    assert main(["report", "--sweep", "--groups", "7,9", "--tables", "1", "--lanes", "2",
                 "--jobs", "2", "--cache", str(tmp_path / "c"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "FAILED G7 T1 L2" in err and "2 of 2 builds failed" in err
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["group"], r["status"]) for r in rows] == [(7, "failed"), (9, "failed")]
    assert "group must be in [2, 4], got 7" in rows[0]["error"]
    assert json.loads((out / "report.json").read_text()) == {
        "sweep": rows, "records": json.loads((out / "sweep_records.json").read_text())}


# --- real builds -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    import distributed                  # in the test extra: CI runs the cluster tests
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        yield c.scheduler_address


@pytest.mark.pnr
def test_local_and_dask_give_identical_records(tmp_path, cluster):
    """The same small sweep (a tiny unit x 2 seeds) on a local pool and on a
    2-worker LocalCluster: identical records apart from timing; a rerun is
    all cache hits."""
    kw = dict(seeds=(1, 2), work_root=str(tmp_path / "work"))
    local, _, local_all = synth_many(TINY[:1], cache=ResultCache(tmp_path / "a"), jobs=2, **kw)
    dask, _, dask_all = synth_many(TINY[:1], cache=ResultCache(tmp_path / "b"),
                                   scheduler=cluster, **kw)
    assert all(r["status"] == "done" for r in local_all + dask_all)
    assert [_strip(r) for r in local_all] == [_strip(r) for r in dask_all]
    assert [_strip(r) for r in local] == [_strip(r) for r in dask]
    assert local[0]["seeds"] == [1, 2] and local[0]["fmax_min"] <= local[0]["fmax_max"]
    # the comparison can fail: another seed is another record
    assert _strip(local_all[0]) != _strip(local_all[1])
    assert local_all[0]["mapper"] == "abc9" and local_all[0]["lut4"] > 0
    seen = []
    again = synth_unit("requant", {"channels": 1}, cache=ResultCache(tmp_path / "b"), seed=1,
                       status=seen.append, work_root=str(tmp_path / "none"))
    assert seen == ["cached"] and {"status": "done", **again} == dask_all[0]
    assert not (tmp_path / "none").exists()


@pytest.mark.pnr
def test_failure_on_a_worker_is_reported(tmp_path, cluster):
    """A tool run that fails on a Dask worker (a timeout far too short) comes
    back as a failed record with its step and log; nothing is cached."""
    cache = ResultCache(tmp_path / "c")
    merged, tasks, records = synth_many(TINY[:1], cache=cache, scheduler=cluster,
                                        timeout_s=0.01, work_root=str(tmp_path / "work"))
    rec = records[0]
    assert rec["status"] == "failed" and "timed out" in rec["error"]
    assert rec["step"].startswith("yosys") and Path(rec["log"]).exists()
    assert merged == records
    with pytest.raises(SweepFailure, match=r"1 of 1 builds failed: requant ch1: .*log "):
        raise failure_summary(tasks, records)
    assert not list((tmp_path / "c").rglob("*.json"))
