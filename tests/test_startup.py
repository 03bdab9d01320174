"""Start-up: ``import pamingest`` and ``pamingest --help`` leave the heavy stack unimported.

Timings are measured by ``benchmarks/startup.py`` (issue #11: <= 0.4 s and <= 0.6 s);
these tests check what makes them possible, in fresh interpreters.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pamingest

HEAVY = ("dask", "distributed", "zarr", "icechunk", "xarray", "av", "scipy")
HELP = """
import contextlib, io
from pamingest.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
"""


def fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports the pamingest under test."""
    path = [str(Path(pamingest.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


def modules_after(code: str) -> set[str]:
    out = fresh(code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))").stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


@pytest.mark.parametrize("what,code", [("import pamingest", "import pamingest"), ("pamingest --help", HELP)],
                         ids=["import", "help"])
def test_no_heavy_imports(what, code):
    assert sorted(set(HEAVY) & modules_after(code)) == [], f"{what} imports them"


def test_public_names_resolve_on_first_use():
    out = fresh(
        "import pamingest, sys\n"
        "import pamingest.ingest\n"  # the submodule first, as a Dask worker or the CLI may
        "assert callable(pamingest.ingest) and pamingest.ingest is sys.modules['pamingest.ingest'].ingest\n"
        "names = {n: getattr(pamingest, n) for n in pamingest.__all__}\n"
        "assert set(pamingest.__all__) <= set(dir(pamingest))\n"
        "import xarray as xr\n"
        "print(hasattr(xr.Dataset, 'pam'))\n"  # from pamingest import open_store registered it
    ).stdout
    assert out.split() == ["True"]
    from pamingest import Store, TimestampedFiles, ingest, open_store  # noqa: F401

    assert callable(ingest) and pamingest.ingest is ingest


@pytest.mark.parametrize("module", ["pamingest.decode.hls", "pamingest.decode.sndfile", "pamingest.decode.xwav",
                                    "pamingest.ingest", "pamingest.labeling.run", "pamingest.store.codec",
                                    "pamingest.testing"])
def test_each_worker_module_imports_first(module):
    """Dask workers import a task's module first (unpickling it): no import cycle may depend on the order."""
    fresh(f"import {module}")


def test_a_small_ingest_in_threads_imports_neither_dask_nor_pandas(fixtures, tmp_path):
    """A job below LOCAL_WORK_BYTES runs in threads: importing distributed (0.17 s, to quiet its
    logger) or pandas (0.13 s, for day splits) would be a third of its start-up."""
    soundtrap = fixtures / "soundtrap"
    code = (
        "from pamingest.cli import main\n"
        f"assert main(['ingest', 'files', {str(soundtrap)!r}, '--template', 'soundtrap', "
        f"'--store', {str(tmp_path / 'store')!r}, '--no-progress']) == 0\n"
    )
    loaded = modules_after(code)
    assert {"zarr", "icechunk"} <= loaded  # it did ingest
    assert sorted({"dask", "distributed", "pandas"} & loaded) == []


def test_the_library_never_imports_prefect():
    """Orchestrators hand the library a Dask client or an address; only flows/ import Prefect
    (docs/architecture.md, invariant 6). Checked on every import statement under pamingest/."""
    import ast

    root = Path(pamingest.__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "prefect"]
    assert found == []
    assert len(list(root.rglob("*.py"))) > 30  # the walk saw the package
