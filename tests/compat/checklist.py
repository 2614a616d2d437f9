"""The runner the SDK scripts that report results to a Rust test share (bedrock_features.py,
guardrails.py, residency.py): every check runs, one line each, a closing "N passed, N failed",
then the results as one JSON object on the last line; the exit status is 1 on any failure."""

import json
import sys
import traceback


def run(checks, results):
    failed = 0
    for check in checks:
        try:
            check()
            print(f"ok   {check.__name__}")
        except Exception:  # noqa: BLE001 - report every failure and carry on
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"{len(checks) - failed} passed, {failed} failed")
    print(json.dumps(results))
    sys.exit(1 if failed else 0)
