"""The ``cryptolens`` command: run the whole stack, one service, the UI, or an alert backtest."""

from __future__ import annotations

import argparse
import sys

from services.common.config import SettingsError, add_arguments, load_settings


def _service_classes(name: str):
    """(settings class, service class) per service, imported lazily so each process loads only its own."""
    if name == "fetch":
        from services.fetch.server import FetchService, FetchSettings

        return FetchSettings, FetchService
    if name == "core":
        from services.core.server import CoreService, CoreSettings

        return CoreSettings, CoreService
    from services.alerts.server import AlertsService, AlertsSettings

    return AlertsSettings, AlertsService


def cmd_serve(argv: list[str]) -> int:
    if not argv or argv[0] not in ("fetch", "core", "alerts"):
        print("usage: cryptolens serve fetch|core|alerts [--help]", file=sys.stderr)
        return 2
    name = argv[0]
    settings_cls, service_cls = _service_classes(name)
    parser = argparse.ArgumentParser(prog=f"cryptolens serve {name}",
                                     description=f"Run the {name} gRPC service until SIGTERM/SIGINT.")
    add_arguments(parser, settings_cls)
    try:
        settings = load_settings(settings_cls, vars(parser.parse_args(argv[1:])))
    except SettingsError as exc:
        print(f"cryptolens serve {name}: {exc}", file=sys.stderr)
        return 2
    from services.common.runtime import run_service

    return run_service(settings, service_cls)


def cmd_ui(argv: list[str]) -> int:
    from services.stack import run_ui

    return run_ui(argv)


def cmd_up(argv: list[str]) -> int:
    from services.stack import run_up

    return run_up(argv)


def cmd_alerts(argv: list[str]) -> int:
    from services.alerts.cli import main as alerts_main

    return alerts_main(argv)


COMMANDS = {
    "up": (cmd_up, "start Redis, Fetch, Core, Alerts and the UI; Ctrl-C stops them all"),
    "serve": (cmd_serve, "run one service: fetch, core or alerts"),
    "ui": (cmd_ui, "run the Streamlit dashboard"),
    "alerts": (cmd_alerts, "alert tools: backtest"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<7} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: cryptolens COMMAND [options]\n\ncommands:\n" + "\n".join(lines)
              + "\n\n'cryptolens COMMAND --help' tells more.", file=sys.stderr if argv else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]][0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
