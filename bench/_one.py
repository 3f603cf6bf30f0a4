"""Run one benchmark in this process: ``python -m bench._one NAME SETTINGS_JSON OUT_JSON`` (used by bench/__main__)."""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from bench.common import Settings, Skipped

if __name__ == "__main__":
    name, settings, out = sys.argv[1], Settings.from_json(sys.argv[2]), sys.argv[3]
    try:
        result = importlib.import_module(f"bench.{'sync' if name == 'sync' else name}").run(settings)
    except Skipped as exc:
        result = {"skipped": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    with open(out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    sys.stdout.flush()
    # vLLM and Ray may leave threads behind; the result is written, so leave without waiting on them.
    import os

    os._exit(0)
