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


FIELD_TEMPLATE = "{site}_%Y%m%d_%H%M%S.{ext:wav|flac}"


@pytest.mark.parametrize("name,reason", [
    ("k25a_20210101_250000.wav", "hour 25 out of range 0-23"),
    ("k25a_20210101_009900.wav", "minute 99 out of range 0-59"),
    ("k25a_20210101_006000.wav", "minute 60 out of range 0-59"),
    ("k25a_20210101_000061.wav", "second 61 out of range 0-60"),
    ("k25a_20210230_000000.wav", "day 30 out of range for February 2021 (1-28)"),
    ("k25a_20210229_000000.wav", "day 29 out of range for February 2021 (1-28)"),
    ("k25a_20210100_000000.wav", "day 0 out of range for January 2021 (1-31)"),
    ("k25a_20211301_000000.wav", "month 13 out of range 1-12"),
])
def test_impossible_times_are_rejected_naming_the_field_never_rolled_over(name, reason):
    with pytest.raises(TemplateError) as err:
        parse_name(name, get_templates(FIELD_TEMPLATE))
    assert str(err.value) == f"file name {name!r}: {reason}"


def test_years_outside_the_stored_range_are_rejected_with_the_range():
    templates = get_templates(FIELD_TEMPLATE)
    for name, year in (("k25a_99990101_000000.wav", 9999), ("k25a_16000101_000000.wav", 1600),
                       ("k25a_22620101_000000.wav", 2262)):
        with pytest.raises(TemplateError) as err:
            parse_name(name, templates)
        assert str(err.value) == (f"file name {name!r}: year {year} is outside the supported range "
                                  "1678-01-01 to 2262-01-01 UTC (what the store's int64 nanosecond times hold)")
    # The range's ends, and a leap day, are ordinary names.
    assert parse_name("k25a_16780101_000000.wav", templates)[0] == to_ns("1678-01-01T00:00:00")
    assert parse_name("k25a_22611231_235959.wav", templates)[0] == to_ns("2261-12-31T23:59:59")
    assert parse_name("k25a_20200229_000000.wav", templates)[0] == to_ns("2020-02-29T00:00:00")
    # A local time that is inside the range by its year but not once taken to UTC.
    late = FilenameTemplate("%Y%m%d_%H%M%S.wav", timezone="Pacific/Honolulu")
    with pytest.raises(TemplateError, match=r"time 2262-01-01T09:00:00Z is outside the supported range 1678-01-01"):
        late.match("22611231_230000.wav")


def test_an_impossible_time_is_the_reason_unless_another_template_reads_the_name():
    both = get_templates([FIELD_TEMPLATE, "{site}_%Y%d%m_%H%M%S.{ext:wav|flac}"])  # the second: day before month
    assert parse_name("k25a_20211302_000000.wav", both)[0] == to_ns("2021-02-13T00:00:00")
    with pytest.raises(TemplateError, match=r"'k25a_20211313_000000.wav': month 13 out of range 1-12"):
        parse_name("k25a_20211313_000000.wav", both)
    # A name the pattern does not fit keeps its message.
    with pytest.raises(TemplateError, match="does not match the template"):
        parse_name("k25a_2021_000000.wav", both)
