"""Orchestration helpers: pieces of work and sources built from deployment parameters."""

import pytest

from pamingest import orchestration as o
from pamingest.sources.orcasound import OrcasoundHLS
from pamingest.sources.sanctsound import SanctSound


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


def test_endpoint_applies_to_s3_sources_only(monkeypatch):
    monkeypatch.setenv(o.ENV_ENDPOINT, "http://127.0.0.1:9000")
    monkeypatch.setenv(o.ENV_STORE_ENDPOINT, "http://127.0.0.1:9001")
    hls = o.build_source("orcasound", {"nodes": "a,b"})
    assert isinstance(hls, OrcasoundHLS) and hls.nodes == ["a", "b"]
    assert hls.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    sanct = o.build_source("sanctsound", {"sites": "ci01"})
    assert isinstance(sanct, SanctSound) and "endpoint_url" not in (sanct.storage_options or {})
    assert o.store_options() == {"endpoint_url": "http://127.0.0.1:9001"}
    with pytest.raises(ValueError, match="unknown source"):
        o.build_source("nosuch", {})
