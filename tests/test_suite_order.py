"""The suite's scheduling holds: ``make test`` runs ``pytest -n 2 --dist
loadgroup``, and the tests of one ``xdist_group`` (a shared Verilator build, a
module fixture that simulates a whole layer) must run on one worker, or each
worker repeats the fixture. pytest 9.2 with pytest-xdist 3.8 silently broke
this (pyproject.toml pins pytest below 9.2); this test notices the next time."""
import subprocess
import sys

PROBE = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.fixture(scope="module")
def shared():
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(f"setup {os.getpid()}\\n")


@pytest.mark.parametrize("i", range(4))
def test_uses_fixture(shared, i):
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(f"test {os.getpid()}\\n")
'''

FILLER = '''
import pytest


@pytest.mark.parametrize("i", range(8))
def test_filler(i):
    pass
'''


def test_xdist_group_runs_on_one_worker_with_one_fixture_setup(tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "test_filler.py").write_text(FILLER)
    log = tmp_path / "probe.log"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, env={"PROBE_LOG": str(log), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = log.read_text().split()
    setups = lines[0::2].count("setup")
    pids = {pid for what, pid in zip(lines[0::2], lines[1::2]) if what == "test"}
    assert (setups, len(pids)) == (1, 1), \
        f"the group ran on {len(pids)} workers with {setups} fixture setups:\n" + log.read_text()
