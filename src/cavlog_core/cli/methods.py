"""``cavlog methods``: list the available anomaly-segmentation methods."""

from __future__ import annotations

import argparse
import json

from ..methods import get_method, list_methods


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog methods`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "methods",
        help="list the available methods (for --method / --methods)",
        description="List every anomaly-segmentation method with a one-line description. Train "
                    "one with `cavlog train DATA --out RUN --method NAME`; compare them with "
                    "`cavlog benchmark`.",
    )
    p.add_argument("--json", action="store_true",
                   help="print {name: {description, trainable, options}} as JSON")
    p.add_argument("--options", action="store_true",
                   help="also list each method's own options (`cavlog train --option NAME=VALUE`)"
                        " with their defaults")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog methods`` with parsed ``args``; return the exit status."""
    methods = list_methods()
    if args.json:
        table = {name: {"description": text, "trainable": bool(get_method(name).trainable),
                        "options": get_method(name).Options().to_dict()}
                 for name, text in methods.items()}
        print(json.dumps(table, indent=2, ensure_ascii=False))
        return 0
    width = max(len(name) for name in methods)
    for name, text in methods.items():
        print(f"{name:<{width}}  {text}")
        options = get_method(name).Options().to_dict()
        if args.options and options:
            shown = ", ".join(f"{key}={value}" for key, value in options.items())
            print(f"{'':<{width}}    options: {shown}")
    return 0
