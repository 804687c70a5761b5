"""Run the benchmarks and print a table: `python -m benchmarks [core|sandbox|abuse|up ...]`."""

from __future__ import annotations

import importlib
import sys

from rich.console import Console
from rich.table import Table

SUITES = ["core", "egress", "sandbox", "load", "abuse", "up", "claude", "broker"]


def main(argv: list[str]) -> int:
    wanted = argv or SUITES
    table = Table(title="agentvisor benchmarks", title_justify="left")
    for column in ("suite", "measure", "value", "target", "verdict"):
        table.add_column(column)
    missed = 0
    for suite in wanted:
        try:
            module = importlib.import_module(f"benchmarks.{suite}")
        except ModuleNotFoundError:
            continue
        for result in module.run():
            table.add_row(suite, result.name, result.value, result.target, result.verdict)
            missed += result.ok is False
    Console(width=140).print(table)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
