"""File-name templates: the shipped recorder/archive forms and the error paths."""

import pytest

from pamingest.errors import TemplateError
from pamingest.sources.templates import FilenameTemplate, get_templates, parse_name
from pamingest.timing import to_ns

CASES = [
    ("soundtrap", "67416073.210610033655.flac", "2021-06-10T03:36:55", {"site": "67416073"}),
    ("soundtrap", "6716.190101000000.wav", "2019-01-01T00:00:00", {"site": "6716"}),
    ("songmeter", "S4A03895_20190522_001500.wav", "2019-05-22T00:15:00", {"site": "S4A03895"}),
    ("audiomoth", "20200101_120000.WAV", "2020-01-01T12:00:00", {}),
    ("sanctsound", "SanctSound_CI01_01_671379494_20181031T220000Z.flac", "2018-10-31T22:00:00",
     {"site": "CI01", "deployment": "01", "serial": "671379494"}),
    ("sanctsound", "SanctSound_CI01_02_671883305_190325210000.flac", "2019-03-25T21:00:00",
     {"site": "CI01", "deployment": "02", "serial": "671883305"}),
    ("sanctsound", "SanctSound_CI01_08_671379494_210708180002_o.flac", "2021-07-08T18:00:02",
     {"site": "CI01", "deployment": "08", "suffix": "o"}),
    ("nrs", "NRS11_20191231_230836.flac", "2019-12-31T23:08:36", {"station": "11"}),
    ("nrs", "NRS11_20200101_030860.flac", "2020-01-01T03:09:00", {"station": "11"}),
    ("pifsc", "Hawaii_K_14_121216_190000.df20.x.flac", "2012-12-16T19:00:00",
     {"prefix": "Hawaii_K_14", "product": ".df20"}),
    ("pifsc", "Hawaii_K_14_121216_190000.x.flac", "2012-12-16T19:00:00", {"prefix": "Hawaii_K_14", "product": ""}),
    ("mars", "MARS_20220901_000016.wav", "2022-09-01T00:00:16", {"ext": "wav"}),
    ("mars-daily", "MARS-20220901T000000Z-16kHz.wav", "2022-09-01T00:00:00", {"product": "16kHz"}),
    ("mars-daily", "MARS-20220901T000000Z-2kHz.wav", "2022-09-01T00:00:00", {"product": "2kHz"}),
    ("sanctsound-clips", "SanctSound_SB03_05_humpbackwhale_20190909T213108Z.wav", "2019-09-09T21:31:08",
     {"site": "SB03", "label": "humpbackwhale"}),
]


@pytest.mark.parametrize("template,name,start,fields", CASES)
def test_shipped_templates(template, name, start, fields):
    start_ns, got = parse_name(name, get_templates(template))
    assert start_ns == to_ns(start)
    for k, v in fields.items():
        assert got[k] == v


def test_seconds_equal_sixty_roll_over():
    t = FilenameTemplate("NRS11_%Y%m%d_%H%M%S.flac")
    assert t.match("NRS11_20191231_235960.flac")[0] == to_ns("2020-01-01T00:00:00")


def test_local_time_names_are_converted_to_utc():
    t = FilenameTemplate("UHH_{n}_S01_%Y%m%d_%H%M%S.flac", timezone="Pacific/Honolulu")
    assert t.match("UHH_001_S01_20161121_150000.flac")[0] == to_ns("2016-11-22T01:00:00")


def test_fractional_seconds():
    t = FilenameTemplate("rec_%Y%m%d_%H%M%S.%f.wav")
    assert t.match("rec_20200101_000000.250.wav")[0] == to_ns("2020-01-01T00:00:00.25")


@pytest.mark.parametrize("name", ["S4A03895_2019052_001500.wav", "notes.txt.wav", "S4A03895_20191322_001500.wav"])
def test_unparsable_names_are_rejected_with_the_name(name):
    with pytest.raises(TemplateError, match=name.split(".")[0]):
        parse_name(name, get_templates("songmeter"))


def test_bad_templates():
    with pytest.raises(TemplateError, match="needs a year"):
        FilenameTemplate("{site}_%H%M%S.wav")
    with pytest.raises(TemplateError, match="unsupported"):
        FilenameTemplate("%Y%m%d_%Q.wav")
    with pytest.raises(TemplateError, match="unknown template"):
        get_templates("nosuchrecorder")
