"""The labelling rule against a brute-force reading of it, on random rows, events and effort."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pamingest.annotations import OverlapRule, chunk_labels, events_in_audio
from pamingest.timing import NAT

MS = 1_000_000  # whole milliseconds: the 1 us slack of the coverage test never matters
LABELS = ["a", "b"]


@st.composite
def scenes(draw):
    n = draw(st.integers(0, 8))
    t, starts, ends = 0, [], []
    for _ in range(n):
        t += draw(st.integers(0, 3000)) * MS  # gaps between rows, possibly none
        length = draw(st.integers(1, 2000)) * MS
        dead = draw(st.booleans()) and draw(st.booleans())
        starts.append(NAT if dead else t)
        ends.append(NAT if dead else t + length)
        t += length
    order = draw(st.permutations(range(n)))  # rows are not stored in time order
    starts, ends = np.array(starts, np.int64)[list(order)], np.array(ends, np.int64)[list(order)]
    # Times often fall exactly on row boundaries, where off-by-one bugs live.
    anchors = sorted({int(x) // MS for x in (*starts, *ends) if x != NAT} | {0})
    at = st.one_of(st.integers(-500, 20000), st.sampled_from(anchors))
    span = st.tuples(at, st.one_of(st.just(0), st.integers(0, 4000)))
    ev = draw(st.lists(st.tuples(span, st.sampled_from(LABELS), st.booleans()), max_size=8))
    ef = draw(st.lists(st.tuples(span, st.sampled_from(["", *LABELS])), max_size=5))
    # Effort often comes in touching pieces (hour after hour): chain some spans end to start.
    for k in range(1, len(ef)):
        if draw(st.booleans()):
            (s0, d0), _ = ef[k - 1]
            ef[k] = ((s0 + d0, ef[k][0][1]), ef[k][1])
    events = {"start": np.array([s * MS for (s, _), _, _ in ev], np.int64),
              "end": np.array([(s + d) * MS for (s, d), _, _ in ev], np.int64),
              "label_norm": np.array([lab for _, lab, _ in ev], dtype=object),
              "reviewed": np.array([r for _, _, r in ev], bool)}
    effort = {"start": np.array([s * MS for (s, _), _ in ef], np.int64),
              "end": np.array([(s + d) * MS for (s, d), _ in ef], np.int64),
              "label_norm": np.array([lab for _, lab in ef], dtype=object)}
    rule = OverlapRule(draw(st.sampled_from([0.0, 0.1, 0.25, 1.0])), draw(st.sampled_from([None, 0.3, 0.5, 1.0])),
                       draw(st.booleans()))
    return starts, ends, events, effort, rule


def brute(starts, ends, events, effort, rule):
    out = np.full((len(starts), len(LABELS)), -1, np.int8)
    for i, (s, e) in enumerate(zip(starts, ends)):
        if s == NAT:
            continue
        for j, lab in enumerate(LABELS):
            # Covered: walk the effort spans of this label, extending a covered prefix of the row.
            reach, spans = s, sorted((a, b) for a, b, l in zip(effort["start"], effort["end"], effort["label_norm"])
                                     if l in ("", lab))
            for a, b in spans:
                if a <= reach:
                    reach = max(reach, b)
            if reach >= e:
                out[i, j] = 0
            for a, b, l, r in zip(events["start"], events["end"], events["label_norm"], events["reviewed"]):
                if l != lab or not (r or rule.include_unreviewed):
                    continue
                if a == b:
                    hit = s <= a < e
                else:
                    ov = min(b, e) - max(a, s)
                    hit = ov > 0 and (ov >= rule.min_seconds * 1e9 or
                                      (rule.min_fraction is not None and ov >= rule.min_fraction * (b - a)))
                if hit:
                    out[i, j] = 1
    return out


@settings(max_examples=300, deadline=None)
@given(scenes())
def test_chunk_labels_match_the_rule_read_literally(scene):
    starts, ends, events, effort, rule = scene
    labels, names = chunk_labels(starts, ends, events, effort, rule, labels=LABELS)
    assert names == LABELS
    np.testing.assert_array_equal(labels, brute(starts, ends, events, effort, rule))
    inside = events_in_audio(starts, ends, events["start"], events["end"])
    want = [any(s != NAT and ((a == b and s <= a < e) or (a < e and b > s and a != b))
                for s, e in zip(starts, ends)) for a, b in zip(events["start"], events["end"])]
    assert inside.tolist() == want
