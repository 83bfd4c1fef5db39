"""`make bench`: runs every benchmark section, prints its table and writes bench-results.json.

Each section is a module beside this file with `async def run() -> dict[str, object]`
returning its figures; it prints its own table as it goes. Sections run one after another
in this one process run, so the figures they compare side by side share the machine's state.
"""

import argparse
import asyncio
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS: list[str] = ["engine", "fanout", "tls", "follow", "scheduler", "monitoring", "replicas"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the project's benchmarks.")
    parser.add_argument("sections", nargs="*", default=SECTIONS, help=f"any of {SECTIONS}")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    results: dict[str, object] = {
        "machine": {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    }
    for name in args.sections:
        module = importlib.import_module(name)
        results[name] = asyncio.run(module.run())
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
