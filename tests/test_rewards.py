"""Rewards for exported training rows: free-text answers scored against the ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pamingest.rewards as rewards
from pamingest.rewards import (
    classification_reward, compute_score, count_reward, label_set_f1, localisation_reward, parse_answer,
    parse_count, parse_labels, parse_seconds,
)

VOCAB = ["humpback whale", "killer whale", "blue whale", "fin whale", "vessel", "sperm whale", "minke whale",
         "North Atlantic right whale", "dolphin", "SRKW", "bearded seal"]
HW, KW, NARW = "humpback whale", "killer whale", "North Atlantic right whale"


@pytest.mark.parametrize("text,expected", [
    ("humpback whale", {HW}),
    ("vessel, humpback whale", {HW, "vessel"}),
    ("humpback whales", {HW}),
    ("HUMPBACK WHALE", {HW}),
    ("north atlantic Right Whales", {NARW}),
    ("killer_whale; blue-whale", {KW, "blue whale"}),
    ("SRKWs and dolphins", {"SRKW", "dolphin"}),
    ("Vessel.\nBearded seals!", {"vessel", "bearded seal"}),
    ("- humpback whale\n- vessel", {HW, "vessel"}),
    ("1. humpback whale\n2. vessel", {HW, "vessel"}),
    # misspelled, within FUZZY_CUTOFF
    ("humpbak whale", {HW}),
    ("vesel", {"vessel"}),
    ("minky whale, kiler whale", {"minke whale", KW}),
    ("finwhale", {"fin whale"}),
    # other words, below FUZZY_CUTOFF: "true whale" is 0.80 from "blue whale", "any whale" 0.78 from "fin whale"
    ("true whale", set()),
    ("any whale", set()),
    # short names match exactly only
    ("SRK", set()),
    ("SRKW", {"SRKW"}),
    # a label's distinctive ending anywhere, its distinctive beginning as a whole item
    ("I think it's a right whale", {NARW}),
    ("humpbacks", {HW}),
    ("the minke", {"minke whale"}),
    ("blue water and a vessel", {"vessel"}),
    # the answer says none
    ("None", set()),
    ("none.", set()),
    ("nothing", set()),
    ("no", set()),
    ("None of these", set()),
    ("", set()),
    ("   \n ", set()),
    ("No, I hear a minke whale", {"minke whale"}),
    # rambling: labels inside sentences
    ("I can hear a humpback whale singing, and there is a vessel passing by.", {HW, "vessel"}),
    ("orca, humpback whale", {HW}),  # never a label outside the vocabulary
    # what the model answered, not what it thought
    ("<think>maybe a killer whale?</think>blue whale", {"blue whale"}),
    ("<think>killer whale</think><answer>fin whale</answer>", {"fin whale"}),
    ("The answer is: fin whale", {"fin whale"}),
])
def test_parse_labels(text, expected):
    assert parse_labels(text, VOCAB) == expected


@pytest.mark.parametrize("text,unmatched", [
    ("humpback whale, orca", ("orca",)),
    ("I cannot tell", ("I cannot tell",)),
    ("humpback whale, it's loud. Probably feeding", ("it's loud", "Probably feeding")),
    ("None, humpback whale", ()),  # a "no" item is not a wrong label
])
def test_parse_answer_lists_items_that_name_no_label(text, unmatched):
    assert parse_answer(text, VOCAB).unmatched == unmatched


def test_overlapping_names_go_to_the_longest():
    assert parse_labels("killer whale", ["whale", "killer whale"]) == {"killer whale"}
    assert parse_labels("killer whale and a whale", ["whale", "killer whale"]) == {"killer whale", "whale"}


@pytest.mark.parametrize("vocabulary,message", [
    (["vessel", "Vessels"], "cannot be told apart"),
    (["humpback whale", "rock and roll"], "item separator"),
    ([], "empty"),
    ("humpback whale", "list of label names"),
])
def test_unreadable_vocabulary_is_an_error(vocabulary, message):
    with pytest.raises(ValueError, match=message):
        parse_labels("humpback whale", vocabulary)


@pytest.mark.parametrize("response,truth,expected", [
    ("humpback whale, vessel", "humpback whale, vessel", 1.0),
    ("vessel, humpback whale", "humpback whale, vessel", 1.0),
    ("Humpback Whales and a VESSEL", "humpback whale, vessel", 1.0),
    ("humpbak whale, vesel", "humpback whale, vessel", 1.0),
    ("humpback whale, vessel, killer whale", "humpback whale, vessel", 0.8),  # 2*2 / (2*2 + 1)
    ("humpback whale", "humpback whale, vessel", 2 / 3),  # 2*1 / (2*1 + 1)
    ("killer whale", "humpback whale", 0.0),
    ("None", "None", 1.0),
    ("none of these", "None", 1.0),
    ("", "None", 1.0),
    ("None", "humpback whale", 0.0),
    ("humpback whale", "None", 0.0),
    ("I cannot tell", "None", 0.0),  # an unmatched item is a false positive: no free 1.0 on empty clips
    ("humpback whale, orca", "humpback whale, killer whale", 0.5),  # tp 1, fp 1 (orca), fn 1
    ("I can hear a humpback whale, it's quite loud, probably feeding.", "humpback whale", 0.5),  # tp 1, fp 2
    (", ".join(VOCAB), "humpback whale", 2 / 12),  # naming everything: tp 1, fp 10
    ("humpback whale", ["humpback whale"], 1.0),
    ("None", [], 1.0),
    ("SRKW, vessel", np.array(["vessel", "SRKW"]), 1.0),
])
def test_label_set_f1(response, truth, expected):
    assert label_set_f1(response, truth, VOCAB) == pytest.approx(expected)


def test_f1_ground_truth_outside_the_vocabulary_is_an_error():
    with pytest.raises(ValueError, match="'orca' is not in the vocabulary"):
        label_set_f1("humpback whale", "humpback whale, orca", VOCAB)


@pytest.mark.parametrize("response,truth,expected", [
    ("killer whale", KW, 1.0),
    ("It sounds like a Killer Whale.", KW, 1.0),
    ("kiler whale", KW, 1.0),
    ("SRKW", "SRKW", 1.0),
    ("humpbacks", HW, 1.0),
    ("humpback whale", KW, 0.0),
    ("no idea", KW, 0.0),
    ("orcas", KW, 0.0),
    ("killer whale or humpback whale", HW, 0.0),  # equally close: the first named is the answer
    ("killer whale or humpback whale", KW, 1.0),
    ("humpbak whale or killer whale", KW, 1.0),  # an exact name outranks a misspelled one
])
def test_classification_reward(response, truth, expected):
    assert classification_reward(response, truth, VOCAB) == expected


@pytest.mark.parametrize("text,seconds", [
    ("3.2", 3.2),
    ("3.2 s", 3.2),
    ("3.2s", 3.2),
    ("at 3.2 seconds", 3.2),
    ("The first call starts at 3.2 sec.", 3.2),
    ("the 3.2-second mark", 3.2),
    (".5", 0.5),
    ("00:03.2", 3.2),
    ("0:03.20", 3.2),
    ("1:03.2", 63.2),
    ("1:02:03.5", 3723.5),
    ("3200 ms", 3.2),
    ("3200ms", 3.2),
    ("0.05 min", 3.0),
    ("3", 3.0),
    ("at 3.2 s, or maybe 9 s", 3.2),
    ("no call", None),
    ("", None),
])
def test_parse_seconds(text, seconds):
    assert parse_seconds(text) == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize("response,truth,tolerance,expected", [
    ("3.2", "3.25", 0.5, 1.0),
    ("at 3.2 seconds", "3.25", 0.5, 1.0),
    ("0:03.20", "3.25", 0.5, 1.0),
    ("3200 ms", "3.25", 0.5, 1.0),
    ("<answer>3.6 s</answer>", "3.25", 0.5, 1.0),
    ("2.75", "3.25", 0.5, 1.0),  # the tolerance is inclusive
    ("3.8", "3.25", 0.5, 0.0),
    ("1:03.2", "3.25", 0.5, 0.0),
    ("3200", "3.25", 0.5, 0.0),  # no unit: seconds
    ("9 s or 3.2 s", "3.25", 0.5, 0.0),  # the first time counts
    ("3.6", "3.25", 0.25, 0.0),
    ("3.3", 3.25, 0.1, 1.0),
    ("I don't know", "3.25", 0.5, 0.0),
])
def test_localisation_reward(response, truth, tolerance, expected):
    assert localisation_reward(response, truth, tolerance) == expected


@pytest.mark.parametrize("truth,tolerance,message", [
    ("abc", 0.5, "must be a number"),
    ("nan", 0.5, "must be finite"),
    ("3.25", -0.1, "at least 0"),
])
def test_localisation_bad_arguments_are_errors(truth, tolerance, message):
    with pytest.raises(ValueError, match=message):
        localisation_reward("3.2", truth, tolerance)


@pytest.mark.parametrize("response,truth,expected", [
    ("2", "2", 1.0),
    ("two calls", "2", 1.0),
    ("Two.", "2", 1.0),
    ("I count 2 calls at 3 s and 5 s", "2", 1.0),
    ("3", "2", 0.0),
    ("three", "2", 0.0),
    ("0", "0", 1.0),
    ("zero", "0", 1.0),
    ("none", "0", 1.0),
    ("There are no calls.", "0", 1.0),
    ("nothing", "0", 1.0),
    ("none", "1", 0.0),
    ("twenty", "20", 1.0),
    ("twenty-one", "21", 1.0),
    ("twenty-one", "20", 0.0),
    ("2.5", "2", 0.0),
    ("several", "2", 0.0),
    ("", "0", 0.0),
    ("2", 2, 1.0),
])
def test_count_reward(response, truth, expected):
    assert count_reward(response, truth) == expected


@pytest.mark.parametrize("text,count", [("eleven", 11), ("ninety-nine", 99), ("No.", 0), ("2.0", 2), ("a few", None)])
def test_parse_count(text, count):
    assert parse_count(text) == count


def test_count_ground_truth_must_be_whole():
    with pytest.raises(ValueError, match="whole number"):
        count_reward("2", "2.5")


@pytest.mark.parametrize("solution,truth,info,expected", [
    ("humpback whale, killer whale", "humpback whale, vessel", {"task": "detection", "vocabulary": VOCAB}, 0.5),
    ("None", "None", {"task": "detection", "vocabulary": np.array(VOCAB)}, 1.0),  # a list read back from Parquet
    ("a killer whale", KW, {"task": "classification", "vocabulary": tuple(VOCAB)}, 1.0),
    ("3.4 s", "3.25", {"task": "localisation"}, 1.0),
    ("3.4 s", "3.25", {"task": "localisation", "tolerance_s": None}, 1.0),
    ("3.4 s", "3.25", {"task": "localisation", "tolerance_s": 0.1}, 0.0),
    ("two", "2", {"task": "counting"}, 1.0),
    ("three", "2", {"task": "counting", "vocabulary": VOCAB}, 0.0),
])
def test_compute_score_dispatches_on_task(solution, truth, info, expected):
    score = compute_score("pamingest", solution, truth, info)
    assert isinstance(score, float) and score == pytest.approx(expected)


def test_compute_score_takes_verl_keyword_call():
    # verl's reward managers call by keyword, and may add keywords of their own.
    score = compute_score(data_source="pamingest", solution_str="2", ground_truth="2",
                          extra_info={"task": "counting", "num_turns": 1}, reward_router_address=None)
    assert score == 1.0


@pytest.mark.parametrize("info,message", [
    ({"task": "spectrogram"}, "unknown task 'spectrogram'"),
    ({"task": "caption"}, "'caption' has free-text answers"),
    ({}, "no 'task'"),
    (None, "no 'task'"),
    ({"task": "detection"}, "needs extra_info\\['vocabulary'\\]"),
])
def test_compute_score_errors(info, message):
    with pytest.raises(ValueError, match=message):
        compute_score("pamingest", "humpback whale", "humpback whale", info)


def _fresh(code: str) -> str:
    # A fresh interpreter: what this process already imported must not hide an import.
    env = {**os.environ, "PYTHONPATH": str(Path(rewards.__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout


def test_import_is_cheap():
    out = _fresh("import sys, pamingest.rewards\n"
                 "print(sorted({m.split('.')[0] for m in sys.modules} & "
                 "{'numpy', 'pandas', 'xarray', 'zarr', 'icechunk', 'dask', 'scipy'}))")
    assert out.strip() == "[]"


def test_loads_by_path_as_verl_does():
    # verl's get_custom_reward_fn: spec_from_file_location("custom_module", path), outside the package.
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('custom_module', {rewards.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['custom_module'] = module\n"
        "spec.loader.exec_module(module)\n"
        "info = {'task': 'detection', 'vocabulary': ['humpback whale', 'vessel']}\n"
        "print(json.dumps([module.compute_score(data_source='x', solution_str='Humpback whales', "
        "ground_truth='humpback whale', extra_info=info), 'pamingest' in sys.modules]))"
    )
    assert json.loads(_fresh(code)) == [1.0, False]
