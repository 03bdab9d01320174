"""Verifiable rewards: score a model's free-text answer against an exported ground truth.

The training export writes, per task, an instruction and a ground-truth
answer string; these functions turn a model's answer to that instruction into
a reward in [0, 1]. They are pure Python (standard library only) and this
file imports nothing from the rest of pamingest, so a trainer can load it by
path on a machine where pamingest's own dependencies are not installed.

Tasks and their rules
---------------------
``detection`` -- "Which of these, if any, are present ...? A, B, C, None."
    Ground truth: the present labels joined by ", " in vocabulary order, or
    ``None``. Reward: ``label_set_f1``, the F1 score between the labels the
    answer names and the true labels (1.0 when both are empty).
``classification`` -- one label. Reward: ``classification_reward``, 1.0 when
    the label the answer names best is the true one.
``localisation`` -- "When does the first <label> call start ...?" Ground
    truth: seconds from the start of the clip ("3.25"). Reward:
    ``localisation_reward``, 1.0 when the first time in the answer is within
    ``tolerance`` seconds of the truth (0.5 s unless the row says otherwise).
``counting`` -- "How many <label> events ...?" Ground truth: an integer
    ("2"). Reward: ``count_reward``, 1.0 for the exact count.
``caption`` -- free text: no verifiable reward. ``compute_score`` raises
    ``ValueError`` for it rather than returning None, which a trainer would
    only trip over later as a NaN or a failed tensor write; leave caption rows
    out of RL data (they are for supervised fine-tuning).

Reading an answer
-----------------
Before any rule, the answer is cut to what the model answered: ``<think>...
</think>`` reasoning is dropped (an unclosed ``<think>`` drops the rest), and
when there is an ``<answer>...</answer>`` block only the last one is read.

Labels (``parse_labels``) are found by nearest-label matching:

* Case, Unicode forms (NFKC), punctuation and spacing do not matter;
  underscores and hyphens are spaces ("killer_whale", "Killer-Whale").
* Plurals match singulars ("humpback whales", "SRKWs"): each word goes
  through a few English rules (-ies -> -y, -ches/-shes/-sses/-xes/-zes lose
  -es, a final -s goes unless after s/u/i), on both the answer and the
  vocabulary, so what matters is that the two sides agree.
* The answer is split into items at commas, semicolons, newlines, sentence
  ends, "&" and the word "and"; list markers ("-", "*", "1.") are dropped,
  and so is a leading "Answer:" / "The answer is".
* In each item, every run of words is compared with every label (and with
  each label's distinctive multi-word ending, "right whale" for "North
  Atlantic right whale"): an exact run matches; otherwise ``difflib``
  (``get_close_matches``) accepts the closest label whose similarity ratio
  is at least ``FUZZY_CUTOFF`` (0.85). 0.85 lets one wrong, missing or extra
  letter through in names of five letters or more ("humpbak whale",
  "vesel", "minky whale") and keeps out near neighbours that are other
  words ("true whale" is 0.80 from "blue whale", "any whale" 0.78 from "fin
  whale"). Names shorter than ``FUZZY_MIN_CHARS`` (5) letters, such as
  "SRKW", must match exactly: one letter is too large a share of them.
  Overlapping runs go to the best match, longer names first, so "killer
  whale" is not also read as a label "whale".
* An item that is only the distinctive first word(s) of one label
  ("humpbacks", "the minke") names that label; inside a sentence such
  shortenings are not read, since "blue", "fin" or "north" are ordinary
  words there.
* A vocabulary label that itself contains a separator ("rock and roll"),
  or two labels that normalise alike ("vessel", "Vessels"), raise
  ``ValueError``: answers naming them could not be read.
* An item that begins with a negation ("None", "no", "nothing", "none of
  these", "not ...", "without ...") names nothing and is not wrong. An
  answer made only of such items, or empty, names no label. Negation later
  in an item is not understood ("there is no fin whale" names fin whale):
  the instruction asks for a list, and naming a label costs precision.

Unmatched items are false positives. An item that names no label and is
not a negation counts as one wrong label in ``label_set_f1``: the
instruction asks for a list of labels, and an item that is not one is a
wrong entry ("humpback whale, orca" with orca outside the vocabulary is half
right). Without this rule any answer that names no label ("I can't tell",
"a loud pulse") would score 1.0 on every empty clip, a free reward for
dodging. Rambling costs precision: "I hear a humpback whale, it's quite
loud." scores 2/3 against "humpback whale"; words around a label in the
same item cost nothing ("I hear a humpback whale singing" is one right
item). Rambling never raises F1: only naming true labels does, and each
wrong label named costs precision. ``parse_labels`` never returns a name
outside the vocabulary; ``parse_answer`` also returns the unmatched items,
for logging. Matching costs about 0.1 ms per word of answer.

Numbers: ``localisation_reward`` reads the first time in the answer:
"3.2", "3.2 s", "at 3.2 seconds", "3.2-second", "00:03.2" and "0:03.20"
(m:ss), "1:02:03.5" (h:mm:ss), "3200 ms", "0.05 min"; a number without a
unit is seconds. ``count_reward`` reads the first count: digits, English
words "zero" to "twenty" (and "twenty-one" to "ninety-nine"), or "no",
"none", "nothing" for 0. A first number that is not a whole count ("2.5")
scores 0. Numbers given as words are not read as times.

An answer that cannot be read scores 0.0. A ground truth that cannot be
read (a label outside the vocabulary, "abc" seconds) raises ``ValueError``:
that is a bug in the exported rows, and training on it should stop.

Using it from a trainer
-----------------------
verl (``verl.trainer.main_ppo``) loads a custom reward function from a file::

    custom_reward_function.path=<path to pamingest/rewards.py>
    custom_reward_function.name=compute_score

The path of the installed file is printed by::

    python -c "import pamingest.rewards as r; print(r.__file__)"

verl calls ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` once per response with the row's ``data_source``,
``reward_model.ground_truth`` and ``extra_info`` columns; the exported rows
carry ``extra_info = {"task": ..., "vocabulary": [...], "tolerance_s": ...}``.
verl's ``naive`` and ``dapo`` reward managers call it so; ``prime`` passes
the same four positionally (and turns any error into a 0.0 reward); the
``batch`` manager passes lists and is not supported.
verl loads the file as a module of its own (not as ``pamingest.rewards``),
which is why this file imports only the standard library. Other trainers
can import ``pamingest.rewards`` and call the task functions directly.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

FUZZY_CUTOFF = 0.85
"""Least ``difflib`` similarity ratio at which a run of words matches a label (see module docs)."""
FUZZY_MIN_CHARS = 5
"""Names shorter than this ("SRKW") must match exactly."""
DEFAULT_TOLERANCE_S = 0.5
"""Localisation answers within this many seconds of the truth score 1.0."""

TASKS = ("detection", "classification", "localisation", "counting")
"""Tasks ``compute_score`` scores."""
UNREWARDABLE_TASKS = ("caption",)
"""Tasks the export writes that have no verifiable answer."""

# Words that, first in an item, make it a "no" (names nothing, and is not a wrong label).
_NEGATIONS = frozenset({"no", "not", "none", "nothing", "neither", "nor", "without"})
# Words dropped before an item is compared with the labels' shortened names ("the humpbacks").
_FILLERS = frozenset({"a", "an", "the", "some", "maybe", "possibly", "probably", "perhaps", "likely",
                      "also", "only", "just"})
# An item whose matches score this is a shortened name: below any fuzzy match, so in
# classification a full name, even misspelled, outranks a shortening.
_SHORTENED_SCORE = FUZZY_CUTOFF - 0.01

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_PREAMBLE = re.compile(r"^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)])\s+", re.MULTILINE)
# Item boundaries: , ; & newline, the word "and", and a sentence end (not a decimal point).
_ITEM_SEPARATOR = re.compile(r"[,;&\n]|\band\b|[.!?](?=\s|$)", re.IGNORECASE)
_APOSTROPHES = re.compile(r"['\u2019`]")
_WORD = re.compile(r"[^\W_]+")

_TIME = re.compile(
    r"(?<![\w.:])(?:"
    r"(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)"  # [h:]m:ss[.f]
    r"|(?P<num>\d+(?:\.\d+)?|\.\d+)"
    r"(?:[\s-]*(?P<unit>ms|msecs?|milliseconds?|s|secs?|seconds?|mins?|minutes?)\b)?"
    r")",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"ms": 1e-3, "msec": 1e-3, "msecs": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
                 "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0}

_COUNT_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+")
_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
          "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS, "no": 0, "none": 0, "nothing": 0}


class ParsedAnswer(NamedTuple):
    """What a free-text answer says, read against a vocabulary."""

    labels: frozenset[str]
    """Vocabulary labels the answer names."""
    unmatched: tuple[str, ...]
    """Items of the answer that name no label and are not a "no": false positives in ``label_set_f1``."""


class _Match(NamedTuple):
    label: str
    score: float  # 1.0 exact; a difflib ratio >= FUZZY_CUTOFF; _SHORTENED_SCORE for a shortening
    position: tuple[int, int]  # (item, first word): where the answer names it


# --- reading text ------------------------------------------------------------------------------

def _answer_text(text: str) -> str:
    """The part of a response that answers: no <think> reasoning, the last <answer> block if any."""
    text = _THINK.sub(" ", str(text))
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        text = tagged[-1]
    return _PREAMBLE.sub("", text, count=1)


def _singular(word: str) -> str:
    """A word without its English plural ending (applied to answers and labels alike)."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(text: str) -> tuple[str, ...]:
    """Normalised words: NFKC, case-folded, no apostrophes, _ and - as spaces, singular."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return tuple(_singular(w) for w in _WORD.findall(text))


def _items(text: str) -> list[str]:
    """The list items of an answer (see module docs for the separators)."""
    return _ITEM_SEPARATOR.split(_LIST_MARKER.sub("", _answer_text(text)))


# --- the vocabulary ----------------------------------------------------------------------------

class _Vocabulary:
    """A vocabulary's labels under every name an answer may use for them."""

    def __init__(self, labels: tuple[str, ...]):
        if not labels:
            raise ValueError("the vocabulary is empty")
        self.labels = labels
        words: dict[str, tuple[str, ...]] = {}
        self.by_key: dict[str, str] = {}
        for label in labels:
            if sum(1 for item in _items(label) if _words(item)) > 1:
                raise ValueError(f"vocabulary label {label!r} contains an item separator (, ; & 'and' or a "
                                 "sentence end): answers naming it could not be read")
            w = _words(label)
            key = " ".join(w)
            if not key:
                raise ValueError(f"vocabulary label {label!r} has no letters or digits")
            if key in self.by_key and self.by_key[key] != label:
                raise ValueError(f"vocabulary labels {self.by_key[key]!r} and {label!r} cannot be told apart "
                                 "(they differ only in case, punctuation or plural)")
            self.by_key[key] = label
            words[label] = w
        # Names matched anywhere in an item: each label, and each ending of two or more of its
        # words that no other label shares ("right whale", "atlantic right whale").
        self.names: dict[str, str] = dict(self.by_key)
        endings: dict[str, set[str]] = {}
        beginnings: dict[str, set[str]] = {}
        for label, w in words.items():
            for i in range(1, len(w)):
                beginnings.setdefault(" ".join(w[:i]), set()).add(label)
                if len(w) - i >= 2:
                    endings.setdefault(" ".join(w[i:]), set()).add(label)
        for ending, owners in endings.items():
            if len(owners) == 1 and ending not in self.by_key:
                self.names[ending] = next(iter(owners))
        # Names matched only as a whole item: a label's first word(s), when no other label begins so.
        self.shortenings = {b: next(iter(owners)) for b, owners in beginnings.items()
                            if len(owners) == 1 and b not in self.by_key}
        self.longest = max(n.count(" ") + 1 for n in self.names)
        # Fuzzy candidates for a run of k words: names of k-1..k+1 words ("finwhale" ~ "fin whale").
        fuzzy = [n for n in self.names if len(n.replace(" ", "")) >= FUZZY_MIN_CHARS]
        self.fuzzy_for: dict[int, list[str]] = {
            k: [n for n in fuzzy if abs(n.count(" ") + 1 - k) <= 1] for k in range(1, self.longest + 2)}

    def label(self, name: str) -> str:
        """The vocabulary label exactly named by ``name`` (a ground-truth entry)."""
        label = self.by_key.get(" ".join(_words(name)))
        if label is None:
            raise ValueError(f"ground-truth label {name!r} is not in the vocabulary {list(self.labels)}")
        return label

    def match_item(self, item: int, words: tuple[str, ...]) -> list[_Match] | None:
        """Labels one item names, best first; [] for a "no"; None when it names nothing."""
        whole = " ".join(words)
        if whole in self.by_key:
            return [_Match(self.by_key[whole], 1.0, (item, 0))]
        if words[0] in _NEGATIONS:
            return []
        found: list[tuple[float, int, int, int, str]] = []  # (score, name length, start, stop, label)
        for start in range(len(words)):
            for size in range(1, min(self.longest + 1, len(words) - start) + 1):
                run = " ".join(words[start:start + size])
                name = run if run in self.names else None
                if name is None:
                    close = difflib.get_close_matches(run, self.fuzzy_for[size], n=1, cutoff=FUZZY_CUTOFF)
                    name = close[0] if close else None
                if name is not None:
                    score = 1.0 if name == run else difflib.SequenceMatcher(None, run, name).ratio()
                    found.append((score, len(name), start, start + size, self.names[name]))
        matches: list[_Match] = []
        taken: set[int] = set()
        for score, _, start, stop, label in sorted(found, key=lambda f: (-f[0], -f[1], f[2])):
            if taken.isdisjoint(range(start, stop)) and all(m.label != label for m in matches):
                matches.append(_Match(label, score, (item, start)))
                taken.update(range(start, stop))
        if matches:
            return matches
        content = " ".join(w for w in words if w not in _FILLERS)
        if content in self.shortenings:
            return [_Match(self.shortenings[content], _SHORTENED_SCORE, (item, 0))]
        return None


@functools.lru_cache(maxsize=64)
def _cached_vocabulary(labels: tuple[str, ...]) -> _Vocabulary:
    return _Vocabulary(labels)


def _vocabulary(vocabulary: Iterable[str]) -> _Vocabulary:
    # Rows read back from Parquet give lists as numpy arrays of numpy strings: plain str tuples
    # make them hashable for the cache, and this file does not import numpy.
    if vocabulary is None or isinstance(vocabulary, str):
        raise ValueError(f"vocabulary must be a list of label names, got {vocabulary!r}")
    return _cached_vocabulary(tuple(str(v) for v in vocabulary))


def _matches(text: str, vocabulary: _Vocabulary) -> tuple[list[_Match], list[str]]:
    """Every label an answer names (with score and position), and the items that name none."""
    matches: list[_Match] = []
    unmatched: list[str] = []
    for i, item in enumerate(_items(text)):
        words = _words(item)
        if not words:
            continue
        found = vocabulary.match_item(i, words)
        if found is None:
            unmatched.append(item.strip())
        else:
            matches.extend(found)
    return matches, unmatched


# --- labels ------------------------------------------------------------------------------------

def parse_answer(text: str, vocabulary: Iterable[str]) -> ParsedAnswer:
    """The labels a free-text answer names, and the items of it that name none.

    Parameters
    ----------
    text : str
        The model's answer.
    vocabulary : iterable of str
        The label names the instruction offered.

    Returns
    -------
    ParsedAnswer
        ``labels`` (a subset of ``vocabulary``) and ``unmatched``, the items
        that name no label and are not a "no" (see the module docs).
    """
    matches, unmatched = _matches(text, _vocabulary(vocabulary))
    return ParsedAnswer(frozenset(m.label for m in matches), tuple(unmatched))


def parse_labels(text: str, vocabulary: Iterable[str]) -> set[str]:
    """The vocabulary labels a free-text answer names (nearest-label matching, module docs).

    Parameters
    ----------
    text : str
        The model's answer, e.g. ``"Humpback whales and a vesel."``.
    vocabulary : iterable of str
        The label names the instruction offered.

    Returns
    -------
    set of str
        Labels of ``vocabulary`` only; empty for "None", "nothing", "no",
        "none of these", an empty answer, or an answer that names no label.
    """
    return set(parse_answer(text, vocabulary).labels)


def _truth_labels(ground_truth: str | Iterable[str], vocabulary: _Vocabulary) -> set[str]:
    if isinstance(ground_truth, str):
        text = ground_truth.strip()
        if text.casefold() in ("", "none"):
            return set()
        ground_truth = text.split(",")
    names = (str(name).strip() for name in ground_truth)
    return {vocabulary.label(name) for name in names if name}


def label_set_f1(response: str, ground_truth: str | Iterable[str], vocabulary: Iterable[str]) -> float:
    """F1 score between the labels an answer names and the true labels (the detection reward).

    Each answer item that names no label counts as one false positive (module
    docs: "Unmatched items are false positives").

    Parameters
    ----------
    response : str
        The model's answer.
    ground_truth : str or iterable of str
        The true labels: the exported string (names joined by ", ", or
        ``"None"``) or a list of names (empty for none).
    vocabulary : iterable of str
        The label names the instruction offered.

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)`` in [0, 1]; 1.0 when the answer and the
        truth are both empty, 0.0 when only one of them is.

    Raises
    ------
    ValueError
        A ground-truth label is not in ``vocabulary``.
    """
    vocab = _vocabulary(vocabulary)
    truth = _truth_labels(ground_truth, vocab)
    matches, unmatched = _matches(response, vocab)
    predicted = {m.label for m in matches}
    tp = len(predicted & truth)
    fp = len(predicted - truth) + len(unmatched)
    fn = len(truth - predicted)
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def classification_reward(response: str, ground_truth: str, vocabulary: Iterable[str]) -> float:
    """1.0 when the label an answer names best is the true label, else 0.0.

    "Best" is the closest match (an exact name before a misspelled one,
    before a shortening); between equally close ones, the one named first.
    Naming several labels therefore never helps: only one is taken.

    Parameters
    ----------
    response : str
        The model's answer.
    ground_truth : str
        The true label's name.
    vocabulary : iterable of str
        The label names the instruction offered.

    Returns
    -------
    float
        1.0 or 0.0 (0.0 when the answer names no label).

    Raises
    ------
    ValueError
        ``ground_truth`` is not in ``vocabulary``.
    """
    vocab = _vocabulary(vocabulary)
    truth = vocab.label(str(ground_truth))
    matches, _ = _matches(response, vocab)
    if not matches:
        return 0.0
    best = min(matches, key=lambda m: (-m.score, m.position))
    return 1.0 if best.label == truth else 0.0


# --- numbers -----------------------------------------------------------------------------------

def parse_seconds(text: str) -> float | None:
    """The first time in a text, in seconds; None when there is none.

    Reads "3.2", "3.2 s", "at 3.2 seconds", "00:03.2", "0:03.20",
    "1:02:03.5", "3200 ms", "0.05 min"; a number without a unit is seconds.
    """
    found = _TIME.search(_answer_text(text))
    if found is None:
        return None
    if found["s"] is not None:
        return int(found["h"] or 0) * 3600 + int(found["m"]) * 60 + float(found["s"])
    unit = (found["unit"] or "s").casefold()
    return float(found["num"]) * _UNIT_SECONDS.get(unit, 1.0)


def localisation_reward(response: str, ground_truth: str | float,
                        tolerance: float = DEFAULT_TOLERANCE_S) -> float:
    """1.0 when the first time in an answer is within ``tolerance`` seconds of the truth, else 0.0.

    Parameters
    ----------
    response : str
        The model's answer, e.g. ``"It starts at 0:03.2"``.
    ground_truth : str or float
        The true start, in seconds from the start of the clip (``"3.25"``).
    tolerance : float
        Largest error, in seconds, that still scores 1.0 (inclusive).

    Returns
    -------
    float
        1.0 or 0.0 (0.0 when the answer gives no time).

    Raises
    ------
    ValueError
        ``ground_truth`` is not a finite number, or ``tolerance`` is negative.
    """
    truth = _finite(ground_truth, "localisation ground truth")
    tolerance = _finite(tolerance, "tolerance")
    if tolerance < 0:
        raise ValueError(f"tolerance must be at least 0 seconds, got {tolerance}")
    answer = parse_seconds(response)
    if answer is None:
        return 0.0
    # A hair of slack so that an answer exactly `tolerance` away is not lost to float rounding.
    return 1.0 if abs(answer - truth) <= tolerance + 1e-9 else 0.0


def parse_count(text: str) -> int | None:
    """The first count in a text; None when there is none or it is not a whole number.

    Reads digits ("2"), words "zero" to "ninety-nine" ("two calls",
    "twenty-one"), and "no", "none", "nothing" as 0.
    """
    tokens = _COUNT_TOKEN.findall(_answer_text(text).casefold())
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            value = float(token)
            return int(value) if value.is_integer() else None
        if token in _NUMBER_WORDS:
            value = _NUMBER_WORDS[token]
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            if token in _TENS and following in _UNITS[1:10]:
                value += _UNITS.index(following)
            return value
    return None


def count_reward(response: str, ground_truth: str | int) -> float:
    """1.0 when the first count in an answer equals the true count, else 0.0.

    Parameters
    ----------
    response : str
        The model's answer, e.g. ``"two calls"``, ``"3"``, ``"none"``.
    ground_truth : str or int
        The true count (``"2"``).

    Returns
    -------
    float
        1.0 or 0.0 (0.0 when the answer gives no count).

    Raises
    ------
    ValueError
        ``ground_truth`` is not a whole number.
    """
    truth = _finite(ground_truth, "count ground truth")
    if not truth.is_integer() or truth < 0:
        raise ValueError(f"count ground truth must be a whole number, got {ground_truth!r}")
    return 1.0 if parse_count(response) == int(truth) else 0.0


def _finite(value: Any, what: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


# --- the trainer's entry point -----------------------------------------------------------------

def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> float:
    """The reward of one response: verl's custom reward function.

    Dispatches on ``extra_info["task"]``: ``detection`` -> ``label_set_f1``,
    ``classification`` -> ``classification_reward``, ``localisation`` ->
    ``localisation_reward``, ``counting`` -> ``count_reward``.

    Parameters
    ----------
    data_source : str
        The row's ``data_source`` (the dataset's name); not used for scoring.
    solution_str : str
        The model's decoded response.
    ground_truth : str or list of str
        The row's ``reward_model.ground_truth``.
    extra_info : mapping
        The row's ``extra_info``: ``task`` (required), ``vocabulary`` (a list
        of label names; required for detection and classification) and
        ``tolerance_s`` (localisation; 0.5 s when absent or None).
    **kwargs
        Ignored: verl adds keyword arguments of its own to the call in some
        set-ups (``reward_kwargs`` from its config, a reward-model router's
        address).

    Returns
    -------
    float
        The reward, in [0, 1].

    Raises
    ------
    ValueError
        No ``extra_info["task"]``, an unknown task, a caption task (no
        verifiable answer), a missing vocabulary, or a ground truth that
        cannot be read.
    """
    info = extra_info if extra_info is not None else {}
    task = info.get("task")
    if task is None:
        raise ValueError(f"extra_info has no 'task' (data_source {data_source!r}); expected one of {TASKS}")
    if task in UNREWARDABLE_TASKS:
        raise ValueError(f"task {task!r} has free-text answers with no verifiable reward; "
                         "leave its rows out of RL data")
    if task == "detection":
        return label_set_f1(solution_str, ground_truth, _vocabulary_of(info, task))
    if task == "classification":
        return classification_reward(solution_str, ground_truth, _vocabulary_of(info, task))
    if task == "localisation":
        tolerance = info.get("tolerance_s")
        return localisation_reward(solution_str, ground_truth,
                                   DEFAULT_TOLERANCE_S if tolerance is None else tolerance)
    if task == "counting":
        return count_reward(solution_str, ground_truth)
    raise ValueError(f"unknown task {task!r} (data_source {data_source!r}); expected one of {TASKS}")


def _vocabulary_of(info: Mapping[str, Any], task: str) -> Iterable[str]:
    vocabulary = info.get("vocabulary")
    if vocabulary is None:
        raise ValueError(f"task {task!r} needs extra_info['vocabulary'], the list of label names")
    return vocabulary
