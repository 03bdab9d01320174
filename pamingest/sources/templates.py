"""File-name templates: explicit patterns that give a recording's start time.

A template is the file's base name with strftime-style time codes and named
fields in braces::

    "{site}.%y%m%d%H%M%S.{ext}"          SoundTrap   67416073.210610033655.flac
    "{site}_%Y%m%d_%H%M%S.{ext}"         SongMeter   S4A03895_20190522_001500.wav

Time codes: ``%Y %y %m %d %H %M %S`` and ``%f`` (fractional seconds, any
number of digits). Fields: ``{name}`` matches anything but ``/``; ``{name:REGEX}``
gives the pattern. ``{site}`` names the site; ``{ext}`` the extension; other
fields are kept with the file.

A name that matches a template's pattern but holds an impossible time (hour
25, February 30) is rejected with the field and its value, never rolled over
into another time. The one exception: seconds may read 60 (NOAA NRS names
do), and the time rolls over to the next minute. Years must lie in the range
the store's times can hold (``timing.SUPPORTED_RANGE``: 1678-2261).

Formats are never guessed: a source is given its templates explicitly, and a
name that matches none of them is rejected with that reason.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..errors import TemplateError
from ..timing import SUPPORTED_RANGE, SUPPORTED_YEARS, unsupported_time, utc_datetime_to_ns

_CODES = {
    "Y": r"(?P<_Y>\d{4})",
    "y": r"(?P<_y>\d{2})",
    "m": r"(?P<_m>\d{2})",
    "d": r"(?P<_d>\d{2})",
    "H": r"(?P<_H>\d{2})",
    "M": r"(?P<_M>\d{2})",
    "S": r"(?P<_S>\d{2})",
    "f": r"(?P<_f>\d+)",
}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Month names spelled out here: calendar.month_name follows the process's locale.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
# (code, field name, lowest, highest) of the time-of-day fields; seconds may read 60 (NRS names).
_CLOCK = (("_H", "hour", 0, 23), ("_M", "minute", 0, 59), ("_S", "second", 0, 60))


def _tokens(pattern: str):
    """Split a template into ("text", s, None), ("code", c, None), ("field", name, regex).

    Braces inside a field's regex (``{site:[A-Z]{2}}``) nest, so fields are
    matched by counting braces rather than with a regular expression.
    """
    i, text = 0, []
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            if pattern[i + 1] == "%":
                text.append("%")
            else:
                if text:
                    yield "text", "".join(text), None
                    text = []
                yield "code", pattern[i + 1], None
            i += 2
        elif ch == "{":
            depth, j = 1, i + 1
            while j < len(pattern) and depth:
                depth += {"{": 1, "}": -1}.get(pattern[j], 0)
                j += 1
            if depth:
                raise TemplateError(f"template {pattern!r}: unbalanced braces")
            name, _, regex = pattern[i + 1 : j - 1].partition(":")
            if not _FIELD.match(name):
                raise TemplateError(f"template {pattern!r}: bad field name {name!r}")
            if text:
                yield "text", "".join(text), None
                text = []
            yield "field", name, regex or None
            i = j
        else:
            text.append(ch)
            i += 1
    if text:
        yield "text", "".join(text), None


@dataclass(frozen=True)
class FilenameTemplate:
    """A compiled file-name template (see module docstring).

    Parameters
    ----------
    pattern : str
        The template, matched against the whole base name.
    timezone : str
        Zone of the times in names; ``UTC`` for almost every recorder.
    """

    pattern: str
    timezone: str = "UTC"
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str] = []
        seen_codes: set[str] = set()
        for kind, value, regex in _tokens(self.pattern):
            if kind == "text":
                parts.append(re.escape(value))
            elif kind == "code":
                if value not in _CODES:
                    raise TemplateError(f"template {self.pattern!r}: unsupported time code %{value}")
                if value in seen_codes:
                    raise TemplateError(f"template {self.pattern!r}: %{value} appears twice")
                seen_codes.add(value)
                parts.append(_CODES[value])
            else:
                parts.append(f"(?P<{value}>{regex or r'[^/]+?'})")
        if not ({"Y", "y"} & seen_codes) or not {"m", "d"} <= seen_codes:
            raise TemplateError(f"template {self.pattern!r} needs a year (%Y or %y), %m and %d")
        object.__setattr__(self, "_regex", re.compile("".join(parts) + r"\Z"))

    def match(self, name: str) -> tuple[int, dict[str, str]] | None:
        """``(start_ns, fields)`` for a base name, or None if it does not match the pattern.

        Raises
        ------
        TemplateError
            The name matches the pattern but a time field is out of range (the
            message names the field and its value), or the time lies outside the
            range the store holds.
        """
        m = self._regex.match(name)
        if not m:
            return None
        g = m.groupdict()
        year = int(g["_Y"]) if g.get("_Y") else 2000 + int(g["_y"])
        month, day = int(g["_m"]), int(g["_d"])
        if not SUPPORTED_YEARS[0] <= year <= SUPPORTED_YEARS[1]:
            raise TemplateError(f"file name {name!r}: year {year} is outside the supported range {SUPPORTED_RANGE}")
        if not 1 <= month <= 12:
            raise TemplateError(f"file name {name!r}: month {month} out of range 1-12")
        days = calendar.monthrange(year, month)[1]
        if not 1 <= day <= days:
            raise TemplateError(f"file name {name!r}: day {day} out of range for {_MONTHS[month - 1]} {year} "
                                f"(1-{days})")
        clock = {}
        for code, what, lowest, highest in _CLOCK:
            value = int(g.get(code) or 0)
            if not lowest <= value <= highest:
                raise TemplateError(f"file name {name!r}: {what} {value} out of range {lowest}-{highest}")
            clock[what] = value
        frac = g.get("_f") or ""
        # Seconds are added as a timedelta: 60 rolls over to the next minute.
        moment = _dt.datetime(year, month, day, clock["hour"], clock["minute"]) + _dt.timedelta(
            seconds=clock["second"],
            microseconds=int(round(float(f"0.{frac}") * 1e6)) if frac else 0,
        )
        if self.timezone.upper() != "UTC":
            moment = moment.replace(tzinfo=ZoneInfo(self.timezone)).astimezone(_dt.timezone.utc)
        start_ns = utc_datetime_to_ns(moment)
        # A year inside the range may still leave it once a local time is taken to UTC.
        problem = unsupported_time(start_ns)
        if problem:
            raise TemplateError(f"file name {name!r}: {problem}")
        fields = {k: v for k, v in g.items() if not k.startswith("_") and v is not None}
        return start_ns, fields


def parse_name(name: str, templates: tuple[FilenameTemplate, ...]) -> tuple[int, dict[str, str]]:
    """Start time and fields of a base name under the first template that matches.

    A name that matches a pattern only with an impossible time is rejected with
    that reason (the first such template's), unless a later template reads it.
    """
    impossible: TemplateError | None = None
    for template in templates:
        try:
            hit = template.match(name)
        except TemplateError as exc:
            impossible = impossible or exc
            continue
        if hit is not None:
            return hit
    if impossible is not None:
        raise impossible
    wanted = " or ".join(repr(t.pattern) for t in templates)
    raise TemplateError(f"file name {name!r} does not match the template {wanted}")


# Templates shipped for the recorders and archives named in docs/sources.md.
TEMPLATES: dict[str, tuple[FilenameTemplate, ...]] = {
    "soundtrap": (FilenameTemplate(r"{site:\d+}.%y%m%d%H%M%S.{ext:wav|flac|WAV|FLAC}"),),
    "songmeter": (FilenameTemplate(r"{site:[A-Za-z0-9-]+}_%Y%m%d_%H%M%S.{ext:wav|flac|WAV|FLAC}"),),
    # AudioMoth firmware writes the same form as SongMeter, usually without a prefix.
    "audiomoth": (
        FilenameTemplate(r"{site:[A-Za-z0-9-]+}_%Y%m%d_%H%M%S.{ext:wav|WAV}"),
        FilenameTemplate(r"%Y%m%d_%H%M%S.{ext:wav|WAV}"),
    ),
    # Orcasound research-node archives: 2023-05-01_12-00-00_rpi_orcasound_lab-48000-2.flac
    "orcasound-flac": (
        FilenameTemplate(r"%Y-%m-%d_%H-%M-%S_{site:[A-Za-z0-9_]+}-{rate:\d+}-{channels:\d+}.{ext:flac}"),
    ),
    # The three SanctSound audio name forms (docs/sources.md), most specific first.
    "sanctsound": (
        FilenameTemplate(r"SanctSound_{site:[A-Za-z]{2}\d{2}}_{deployment:\d+}_{serial:\d+}_%Y%m%dT%H%M%SZ.{ext:flac|wav}"),
        FilenameTemplate(r"SanctSound_{site:[A-Za-z]{2}\d{2}}_{deployment:\d+}_{serial:\d+}_%y%m%d%H%M%S_{suffix:[A-Za-z0-9]+}.{ext:flac|wav}"),
        FilenameTemplate(r"SanctSound_{site:[A-Za-z]{2}\d{2}}_{deployment:\d+}_{serial:\d+}_%y%m%d%H%M%S.{ext:flac|wav}"),
    ),
    # NOAA NCEI Noise Reference Station: NRS11_20191231_230836.flac; some names carry seconds = 60.
    "nrs": (FilenameTemplate(r"NRS{station:\d{2}}_%Y%m%d_%H%M%S.{ext:flac|wav}"),),
    # NOAA PIFSC HARP recordings as FLAC-compressed XWAV: Hawaii_K_14_121216_190000.df20.x.flac
    # (``.dfNN`` marks a product decimated by NN).
    "pifsc": (FilenameTemplate(r"{prefix:[A-Za-z0-9_]+?}_%y%m%d_%H%M%S{product:(?:\.df\d+)?}.x.{ext:flac|wav}"),),
    # MBARI MARS hydrophone: 10 min files MARS_20220901_000016.wav (256 kHz buckets) and
    # day-long decimated files MARS-20220901T000000Z-16kHz.wav / -2kHz.wav.
    "mars": (FilenameTemplate(r"MARS_%Y%m%d_%H%M%S.{ext:wav|flac}"),),
    "mars-daily": (FilenameTemplate(r"MARS-%Y%m%dT%H%M%SZ-{product:\d+kHz}.{ext:wav|flac}"),),
    # The exemplar clips of noaa-onms/sanctsound carry a label where the serial goes.
    "sanctsound-clips": (
        FilenameTemplate(r"{prefix:(?:[a-z]+_)?}SanctSound_{site:[A-Za-z]{2}\d{2}}_{deployment:\d+}_{label:[a-z]+}_%Y%m%dT%H%M%SZ.{ext:wav|flac}"),
    ),
}


def get_templates(spec: str | FilenameTemplate | tuple | list) -> tuple[FilenameTemplate, ...]:
    """Templates from a shipped name (``"soundtrap"``), a pattern string, or a list."""
    if isinstance(spec, FilenameTemplate):
        return (spec,)
    if isinstance(spec, (tuple, list)):
        return tuple(t for s in spec for t in get_templates(s))
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if "%" in spec or "{" in spec:
        return (FilenameTemplate(spec),)
    known = ", ".join(sorted(TEMPLATES))
    raise TemplateError(f"unknown template {spec!r}: give a pattern or one of {known}")
