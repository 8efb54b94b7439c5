"""``cryptolens alerts backtest``: replay a CSV through one rule, one JSON transition per line."""

from __future__ import annotations

import argparse
import json
import sys

from services.common.errors import InvalidArgument


def _backtest(args) -> int:
    from services.alerts import rules as rules_mod
    from services.alerts.backtest import backtest, transition_to_json
    from services.common.intervals import check_interval, check_symbol
    from services.common.csv_bars import load_csv

    try:
        symbol = check_symbol(args.symbol)
        interval = check_interval(args.interval)
        loaded = rules_mod.load_rules_file(args.rules_file, interval) if args.rules_file else []
        # Built-ins take the windows of the file's interval (and the file's overrides), validated there.
        rules = {r.id: r for r in rules_mod.apply_overrides(interval, interval, rules_mod.overrides_of(loaded))}
        rules.update({r.id: r for r in loaded if r.id not in rules_mod.BUILTIN_IDS})
    except (InvalidArgument, ValueError, OSError) as exc:
        print(f"cryptolens alerts backtest: {exc}", file=sys.stderr)
        return 2
    if args.rule not in rules:
        print(f"cryptolens alerts backtest: unknown rule {args.rule!r}; known: {', '.join(sorted(rules))}",
              file=sys.stderr)
        return 2
    try:
        bars = load_csv(args.csv_file, interval).bars
    except (OSError, ValueError) as exc:
        print(f"cryptolens alerts backtest: cannot read {args.csv_file}: {exc}", file=sys.stderr)
        return 2
    try:
        rule = rules_mod.at_interval(rules[args.rule], interval)
    except InvalidArgument as exc:
        print(f"cryptolens alerts backtest: {exc.message}", file=sys.stderr)
        return 2
    for transition in backtest(rule, symbol, bars["ts"], bars["close"], interval):
        print(json.dumps(transition_to_json(transition)))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cryptolens alerts")
    sub = parser.add_subparsers(dest="command", required=True)
    bt = sub.add_parser("backtest", help="replay history through a rule; prints one JSON object per transition")
    bt.add_argument("--rule", required=True, help="rule id: price_drop, volatility_spike, drawdown or a file rule")
    bt.add_argument("--symbol", required=True, help="canonical symbol, e.g. BTC-USD")
    bt.add_argument("--interval", default="1d", help="bar interval of the file")
    bt.add_argument("--csv-file", required=True, help="timestamp,open,high,low,close,volume CSV (any ts unit)")
    bt.add_argument("--rules-file", default="", help="YAML/JSON rules file with more rules")
    args = parser.parse_args(argv)
    return _backtest(args)
