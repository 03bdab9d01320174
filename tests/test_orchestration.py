"""Orchestration helpers: pieces of work and sources built from deployment parameters, through the registry."""

import ast
import re
import textwrap
from pathlib import Path

import pytest

from pamingest import orchestration as o
from pamingest.errors import ConfigError, PluginError, PluginNotFoundError
from pamingest.sources.files import TimestampedFiles
from pamingest.sources.orcasound import OrcasoundFLAC, OrcasoundHLS
from pamingest.sources.pacific_sound import PacificSound
from pamingest.sources.sanctsound import SanctSound

ROOT = Path(__file__).resolve().parents[1]


def test_orcasound_is_cut_into_node_by_day_pieces():
    pieces = o.work_partitions("orcasound", {"nodes": "rpi_bush_point, rpi_orcasound_lab",
                                             "start": "2024-11-01T12:00Z", "end": "2024-11-03T06:00Z"})
    assert [(p["nodes"], p["start"], p["end"]) for p in pieces] == [
        (["rpi_bush_point"], "2024-11-01T12:00:00", "2024-11-02T00:00:00"),
        (["rpi_bush_point"], "2024-11-02T00:00:00", "2024-11-03T00:00:00"),
        (["rpi_bush_point"], "2024-11-03T00:00:00", "2024-11-03T06:00:00"),
        (["rpi_orcasound_lab"], "2024-11-01T12:00:00", "2024-11-02T00:00:00"),
        (["rpi_orcasound_lab"], "2024-11-02T00:00:00", "2024-11-03T00:00:00"),
        (["rpi_orcasound_lab"], "2024-11-03T00:00:00", "2024-11-03T06:00:00"),
    ]
    assert o.work_partitions("orcasound", {"nodes": ["a"]}) == [{"nodes": ["a"]}]


def test_source_kinds_are_the_registered_entry_points():
    assert {"files", "orcasound", "orcasound-flac", "sanctsound", "ncei", "pacific-sound"} <= set(o.source_kinds())
    assert isinstance(o.build_source("orcasound-flac", {"nodes": "a"}), OrcasoundFLAC)
    ps = o.build_source("pacific-sound", {"product": "16khz", "serials": "6716, 1234"})
    assert isinstance(ps, PacificSound) and list(ps.serials) == ["6716", "1234"]


def test_endpoint_applies_to_s3_sources_only():
    hls = o.build_source("orcasound", {"nodes": "a,b"}, s3_endpoint="http://127.0.0.1:9000")
    assert isinstance(hls, OrcasoundHLS) and hls.nodes == ["a", "b"]
    assert hls.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}  # the default anon is dropped
    files = o.build_source("files", {"root": "s3://b/p", "template": "soundtrap",
                                     "storage_options": {"anon": True}}, s3_endpoint="http://127.0.0.1:9000")
    assert isinstance(files, TimestampedFiles) and files.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    sanct = o.build_source("sanctsound", {"sites": "ci01"}, s3_endpoint="http://127.0.0.1:9000")
    assert isinstance(sanct, SanctSound) and "endpoint_url" not in (sanct.storage_options or {})
    mirror = o.build_source("sanctsound", {"root": "s3://mirror/sanctsound"}, s3_endpoint="http://127.0.0.1:9000")
    assert mirror.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    # No endpoint: the source's own default.
    assert o.build_source("orcasound", {"nodes": ["a"]}).storage_options == {"anon": True}


def test_configuration_mistakes_are_config_errors():
    with pytest.raises(PluginNotFoundError, match="unknown source 'nosuch'.*files"):
        o.build_source("nosuch", {})
    with pytest.raises(ConfigError, match=r"source 'orcasound'.*'node'.*its options: nodes, start"):
        o.build_source("orcasound", {"nodes": "a", "node": "b"})
    with pytest.raises(ConfigError, match="source 'files'.*template"):
        o.build_source("files", {"root": "/data"})
    with pytest.raises(ConfigError, match="no store"):
        o.ingest_partition("files", {"root": "/data", "template": "soundtrap"}, store="")


@pytest.fixture
def source_plugin(tmp_path, monkeypatch):
    """A user's source package registered through the ``pamingest.sources`` entry point (not installed)."""
    site = tmp_path / "site"
    (site / "my_sources").mkdir(parents=True)
    (site / "my_sources" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass, field

        @dataclass
        class Hydrophones:
            root: str
            stations: list = field(default_factory=list)
            storage_options: dict = field(default_factory=dict)
        '''))
    info = site / "my_sources-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-sources\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pamingest.sources]\nhydrophones = my_sources:Hydrophones\n"
                                           "broken = my_sources.missing:Nothing\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    import sys

    sys.modules.pop("my_sources", None)


def test_a_plugin_source_is_built_as_the_shipped_ones(source_plugin):
    src = o.build_source("hydrophones", {"root": "s3://lab/raw", "stations": "a, b"}, s3_endpoint="http://minio:9000")
    assert type(src).__name__ == "Hydrophones" and src.stations == ["a", "b"]
    assert src.storage_options == {"endpoint_url": "http://minio:9000"}
    assert "hydrophones" in o.source_kinds()
    with pytest.raises(PluginError, match="'broken'.*cannot be loaded"):
        o.build_source("broken", {})


def test_the_library_reads_no_pamingest_settings_from_the_environment():
    """Store, scheduler, endpoints and labeller are arguments; flows/settings.py and the CLI read variables."""
    offenders = []
    for path in sorted((ROOT / "pamingest").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"PAMINGEST_[A-Z_]+", node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not offenders, offenders
    imported = {a.name for n in ast.walk(ast.parse((ROOT / "pamingest" / "orchestration.py").read_text()))
                if isinstance(n, ast.Import) for a in n.names}
    assert "os" not in imported
    assert not hasattr(o, "ENV_STORE") and not hasattr(o, "store_options")
