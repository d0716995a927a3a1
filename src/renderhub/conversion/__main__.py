"""`python -m renderhub.conversion`: one conversion, run by the hub as a child process with resource limits.

Prints one JSON line, {"result", "error": {"code", "message"} | null, "warnings": count}, and exits 0 once the
outputs are written (failed conversions included); a non-zero exit means the converter itself crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from renderhub.conversion.engine import convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m renderhub.conversion", description=__doc__)
    parser.add_argument(
        "--input-root", type=Path, required=True, help="the downloaded input container (prefix removed)"
    )
    parser.add_argument("--input", required=True, help="relativeInputAssetPath inside the input root")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the asset and its reports go")
    parser.add_argument("--output-name", required=True, help="the .arrAsset file name")
    parser.add_argument("--conversion-id", required=True)
    args = parser.parse_args(argv)
    outcome = convert(args.input_root, args.input, args.output_dir, args.output_name, args.conversion_id)
    error = None if outcome.error is None else {"code": outcome.error.code, "message": outcome.error.message}
    print(json.dumps({"result": outcome.result, "error": error, "warnings": len(outcome.warnings)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
