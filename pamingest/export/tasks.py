"""Instruction rows from what the store knows about a clip (NatureLM-audio's row shape).

Tasks, each only where its answer is known:

- ``detection``: "Which of these, if any, are present ...? A, B, None." over
  the labels known for the clip (people's labels, and weak ones above
  ``min_score``), in a seeded order; the answer names the present ones in
  that order, or ``None``. Absent means reviewed absent: unknown labels
  are never offered.
- ``classification``: one present label among at least two known ones.
- ``localisation``: seconds from the clip's start to the first event of a
  present label, when that event has exact times (``kind == "event"``),
  starts inside the clip and people reviewed it.
- ``counting``: events of a present label overlapping the clip, when people
  reviewed the whole clip for that label (effort covers it), so the count
  is complete.
- ``caption``: site, source, UTC date and time, sample rate, duration, and
  the labels heard and not heard.

Phrasings come from ``phrasings.json``; one is chosen per row from a hash
of the seed, the clip and the task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from ..annotations.labels import covered
from ..timing import NS_PER_S
from .select import Example

AUDIO_TOKEN = "<Audio><AudioHere></Audio>"
TASKS = ("detection", "classification", "localisation", "counting", "caption")


def phrasings() -> dict[str, list[str]]:
    data = json.loads(resources.files(__package__).joinpath("phrasings.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def pick(seed: int, *key: object) -> int:
    """A stable non-negative integer from the seed and a key: the same inputs, the same choice."""
    digest = hashlib.sha256(":".join(str(k) for k in (seed, *key)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def display(label: str) -> str:
    """A label as the instructions write it (``humpback_whale`` -> ``humpback whale``)."""
    return label.replace("_", " ")


@dataclass(frozen=True)
class Row:
    task: str
    instruction: str  # with the audio token(s)
    output: str
    vocabulary: tuple[str, ...] = ()  # the labels the question offers (display names)


class StreamEvents:
    """A stream's reviewed events and effort, for the tasks that need event times."""

    def __init__(self, ds) -> None:
        ev = ds.pam.events()
        ev = ev[ev["reviewed"].astype(bool)]
        self.events = pd.DataFrame({
            "start": ev["start"].to_numpy().astype("datetime64[ns]").astype(np.int64),
            "end": ev["end"].to_numpy().astype("datetime64[ns]").astype(np.int64),
            "label": ev["label_norm"].astype(str).to_numpy(), "kind": ev["kind"].astype(str).to_numpy()})
        ef = ds.pam.effort()
        self.effort = (ef["start"].to_numpy().astype("datetime64[ns]").astype(np.int64),
                       ef["end"].to_numpy().astype("datetime64[ns]").astype(np.int64),
                       ef["label_norm"].astype(str).to_numpy())

    def overlapping(self, label: str, t0: int, t1: int) -> pd.DataFrame:
        e = self.events
        return e[(e.label == label) & (e.start < t1) & (e.end > t0)].sort_values(["start", "end"])

    def reviewed_whole(self, label: str, t0: int, t1: int) -> bool:
        s, e, lab = self.effort
        mine = (lab == label) | (lab == "")
        return bool(covered(np.array([t0]), np.array([t1]), s[mine], e[mine])[0])


def rows_for(example: Example, events: StreamEvents | None, seed: int, phrasing: dict[str, list[str]],
             tasks=TASKS) -> list[Row]:
    """The instruction rows one clip gives (each task at most once)."""
    out: list[Row] = []
    known = list(example.known)
    present = set(example.present)
    order = sorted(known, key=lambda lab: pick(seed, example.id, "order", lab))

    def phrase(task: str, **fields) -> str:
        options = phrasing[task]
        return AUDIO_TOKEN + " " + options[pick(seed, example.id, task) % len(options)].format(**fields)

    if "detection" in tasks and known:
        names = [display(lab) for lab in order]
        answer = ", ".join(display(lab) for lab in order if lab in present) or "None"
        out.append(Row("detection", phrase("detection", options=", ".join(names)), answer, tuple(names)))
    if "classification" in tasks and len(present) == 1 and len(known) >= 2:
        names = [display(lab) for lab in order]
        out.append(Row("classification", phrase("classification", options=", ".join(names)),
                       display(next(iter(present))), tuple(names)))
    human = sorted(example.positives)
    if events is not None and human:
        label = human[pick(seed, example.id, "event-label") % len(human)]
        hits = events.overlapping(label, example.start_ns, example.end_ns)
        exact = hits[hits.kind == "event"]
        if "localisation" in tasks and len(exact) and len(exact) == len(hits) \
                and int(exact.start.iloc[0]) >= example.start_ns:
            seconds = (int(exact.start.iloc[0]) - example.start_ns) / NS_PER_S
            out.append(Row("localisation", phrase("localisation", label=display(label)), f"{seconds:.2f}",
                           (display(label),)))
        if "counting" in tasks and len(exact) and len(exact) == len(hits) \
                and events.reviewed_whole(label, example.start_ns, example.end_ns):
            out.append(Row("counting", phrase("counting", label=display(label)), str(len(exact)), (display(label),)))
    if "caption" in tasks:
        out.append(Row("caption", phrase("caption"), caption(example), tuple(display(lab) for lab in order)))
    return out


def part_of_day(start_ns: int, longitude: float) -> str | None:
    """Night, morning, afternoon or evening by local mean solar time (UTC + longitude / 15 h);
    None without a longitude (UTC alone says nothing about daylight)."""
    if longitude is None or longitude != longitude:
        return None
    hour = (pd.Timestamp(start_ns).hour + pd.Timestamp(start_ns).minute / 60 + float(longitude) / 15) % 24
    return "night" if hour < 5 or hour >= 21 else "morning" if hour < 12 else "afternoon" if hour < 17 else "evening"


def caption(example: Example) -> str:
    """What the store knows about a clip, as one or two sentences."""
    c = example.clip
    when = pd.Timestamp(example.start_ns).strftime("%Y-%m-%d at %H:%M:%S UTC")
    part = part_of_day(example.start_ns, c.get("longitude"))
    seconds = (example.end_ns - example.start_ns) / NS_PER_S
    text = (f"A {seconds:g}-second recording from site {c['site']} ({c['source']}), made on {when}"
            f"{f' ({part}, local solar time)' if part else ''}, sampled at {int(c['sample_rate']) / 1000:g} kHz.")
    heard = [display(lab) for lab in sorted(example.positives)]
    weak = [f"{display(lab)} (machine score {score:.2f})" for lab, score in sorted(example.weak.items())]
    absent = [display(lab) for lab in sorted(example.negatives)]
    if heard:
        text += " Heard: " + ", ".join(heard) + "."
    if weak:
        text += " Possibly: " + ", ".join(weak) + "."
    if absent:
        text += " Not heard: " + ", ".join(absent) + "."
    return text
