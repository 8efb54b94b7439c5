"""The rules file: YAML or JSON, ``rules:`` list. A rule whose id is a built-in's tunes that built-in."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from services.alerts.rules.model import BUILTIN_IDS, Rule, builtin_rules, rule_from_dict
from services.common.errors import InvalidArgument


def load_rules_file(path: str | Path, interval: str = "1h") -> list[Rule]:
    """Rules from the file, each validated. Built-in overrides are checked at ``interval``; apply
    them at other intervals with ``apply_overrides`` (which validates again)."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {str(exc)[:200]}") from None
    items = doc.get("rules", []) if isinstance(doc, dict) else doc
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ValueError(f"{path}: 'rules' must be a list")
    builtins = {r.id: r for r in builtin_rules(interval)}
    rules, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: rules[{i}] must be a mapping")
        rule_id = item.get("id", "?")
        try:
            rule = rule_from_dict(item, builtins.get(rule_id) if isinstance(rule_id, str) else None)
        except InvalidArgument as exc:
            raise ValueError(f"{path}: rules[{i}] ({str(rule_id)[:40]}): {exc.message}") from None
        if rule.id in seen:
            raise ValueError(f"{path}: rules[{i}]: duplicate id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def overrides_of(rules: list[Rule]) -> dict[str, dict]:
    """The changed fields of each built-in override in a loaded file (id → fields)."""
    defaults = {r.id: r for r in builtin_rules("1h")}
    out = {}
    for rule in rules:
        if rule.id in BUILTIN_IDS:
            base = defaults[rule.id]
            out[rule.id] = {k: v for k, v in vars(rule).items() if v != getattr(base, k) and k != "interval"}
    return out


def apply_overrides(interval: str, primary: str, overrides: dict[str, dict]) -> list[Rule]:
    """The built-ins at ``interval`` with the file's overrides, each validated at that interval.

    Raises InvalidArgument naming the field when an override cannot run at this interval."""
    out = []
    for rule in builtin_rules(interval, primary):
        base_id = rule.id.split(".", 1)[0]
        changes = dict(overrides.get(base_id, {}))
        changes.pop("id", None)
        try:
            out.append(rule_from_dict(changes, rule) if changes else rule)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.field, f"built-in {base_id} at {interval}: {exc.message}") from None
    return out
