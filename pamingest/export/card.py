"""The dataset card (``README.md``) of an export: Hugging Face YAML header, then what is in it.

The YAML says how to load it (``configs``: one ``data_files`` glob per
split) and what its rows are (``dataset_info.features``, in the card's
YAML form of the same features the parquet files carry, and the splits'
row counts). The text gives the snapshot id and the command that made
the export, rows and labels per split, the licence of each source, the
balance report and how labels were decided.
"""

from __future__ import annotations

from typing import Any

from .base import Written


def yaml_feature(name: str, feature: dict[str, Any]) -> dict[str, Any]:
    """A feature in the card's YAML form (``dataset_info.features`` entries)."""
    body = _yaml_type(feature)
    return {"name": name, **body}


def _yaml_type(feature: dict[str, Any]) -> dict[str, Any]:
    kind = feature["_type"]
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "Audio":
        return {"dtype": "audio"}
    if kind == "List":
        inner = _yaml_type(feature["feature"])
        return {"list": inner["dtype"] if set(inner) == {"dtype"} else inner.get("struct", inner)}
    if kind == "Struct":
        return {"struct": [yaml_feature(k, v) for k, v in feature["fields"].items()]}
    raise ValueError(f"no card form for {feature!r}")


def card(*, fmt: str, description: str, written: Written, snapshot: str, store: str, command: str,
         licenses: dict[str, str], label_counts: dict, balance: dict | None, options: dict[str, Any],
         split_bytes: dict[str, int] | None = None) -> str:
    import yaml

    header: dict[str, Any] = {}
    distinct = sorted(set(licenses.values()))
    header["license"] = "other" if len(distinct) != 1 or " " in distinct[0] or distinct[0] == "unknown" \
        else distinct[0].lower()
    header["tags"] = ["bioacoustics", "passive-acoustic-monitoring", "audio", "pamingest"]
    if written.data_files:
        header["configs"] = [{"config_name": "default",
                              "data_files": [{"split": s, "path": p} for s, p in written.data_files.items()]}]
    if written.features:
        header["dataset_info"] = {
            "features": [yaml_feature(n, f) for n, f in written.features.items()],
            "splits": [{"name": s, "num_bytes": int((split_bytes or {}).get(s, 0)), "num_examples": n}
                       for s, n in written.rows.items()],
        }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# pamingest export ({fmt})", "", description + ".", "",
             f"- Store: `{store}`", f"- Snapshot: `{snapshot}` (open it with `pamingest.open_store(store, "
             f"snapshot=\"{snapshot}\")`)", f"- Command: `{command}`", ""]
    lines += ["## Splits", "", "| split | rows |", "|---|---|"]
    lines += [f"| {s} | {n} |" for s, n in written.rows.items()]
    lines += ["", "## Labels per split", "",
              "Positive: people marked it present; negative: people reviewed the clip and it was absent; "
              "weak: a labeller's score at or above the minimum, with no human label (marked weak in each "
              "row). Unknown is never counted as absent.", "",
              "| split | label | positive | negative | weak |", "|---|---|---|---|---|"]
    for split, per in label_counts.items():
        for label, c in per.items():
            lines.append(f"| {split} | {label} | {c['positive']} | {c['negative']} | {c['weak']} |")
    lines += ["", "## Sources and licences", "", "| source | licence |", "|---|---|"]
    lines += [f"| {s} | {lic} |" for s, lic in sorted(licenses.items())]
    lines += ["", "Licences are as the archives publish them; check their terms before redistributing."]
    if balance is not None:
        lines += ["", "## Balance (clips per taxon group)", "", "| group | before | after |", "|---|---|---|"]
        for group in sorted(set(balance["before"]) | set(balance["after"])):
            lines.append(f"| {group} | {balance['before'].get(group, 0)} | {balance['after'].get(group, 0)} |")
    lines += ["", "## Options", "", "```json", _json(options), "```"]
    if written.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in written.notes]
    return "\n".join(lines) + "\n"


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)
