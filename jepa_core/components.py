"""``python -m jepa_core.components``: every registered component, by kind.

Prints kind, name, the plugin it came from and a one-line description, so a
user can see what YAML may name before writing any.
"""

from __future__ import annotations

import argparse
import sys

from jepa_core.errors import UserError, cli
from jepa_core.manager import get_registries


def format_table(registries) -> str:
    rows = [("KIND", "NAME", "PLUGIN", "DESCRIPTION")]
    for kind, registry in registries:
        rows += [(kind, e.name, e.plugin, e.description) for e in registry.entries()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows
    )


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.components", description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="also load this plugin (module path or .py file); repeatable")
    args = parser.parse_args(argv)
    try:
        registries = get_registries(args.plugin)
    except ValueError as exc:  # two plugins registering one name
        raise UserError(str(exc)) from None
    print(format_table(registries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
