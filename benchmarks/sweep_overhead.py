"""Where a finished sweep's time went: kernel start and imports (papermill's overhead) versus the
compute of the runs, from the timings the sweep stamps into every metrics.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

IMPORT_CELL = "import "  # the train notebook's imports cell starts with an import line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs_root", help="the experiment's output_root, e.g. runs/demo")
    args = parser.parse_args()
    kernel = imports = compute = 0.0
    runs = 0
    for path in sorted(Path(args.runs_root).glob("*/*/seed*/metrics.json")):
        timing = json.loads(path.read_text()).get("papermill")
        if not timing:
            continue
        runs += 1
        kernel += timing["kernel_s"]
        for cell in timing["cells"]:
            if cell["cell"].startswith(IMPORT_CELL):
                imports += cell["s"]
            else:
                compute += cell["s"]
    if not runs:
        raise SystemExit(f"no finished runs with timings under {args.runs_root}")
    total = kernel + imports + compute
    print(f"{runs} runs, {total:.0f} s in notebooks: kernel start/stop and I/O {kernel:.0f} s "
          f"({100 * kernel / total:.0f}%), imports {imports:.0f} s ({100 * imports / total:.0f}%), "
          f"compute {compute:.0f} s ({100 * compute / total:.0f}%)")
    print(f"papermill overhead (kernel + imports): {100 * (kernel + imports) / total:.0f}% of the notebook time")


if __name__ == "__main__":
    main()
