"""What `import osvi_async` costs on top of `import aiohttp`, in fresh processes.

    python bench/importtime.py [--runs 5]

For each of `--runs` rounds, one fresh `python -X importtime -c "import osvi_async"` and one
fresh `python -X importtime -c "import aiohttp"` (alternating, pinned to core 1 when taskset
exists); the figure is the cumulative time of the top-level import line, in ms. As a cross-check
without the tracing overhead, the same rounds time the import statement with perf_counter.
Prints the medians and the difference (target: osvi_async adds <= 20 ms).

Bytecode caches are on, as after `pip install`: PYTHONDONTWRITEBYTECODE is cleared and the
caches go to a temporary PYTHONPYCACHEPREFIX (not into the work tree), primed by one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from servers import pin, sdk_revision

BENCH: Final = Path(__file__).resolve().parent
MODULES: Final = ("osvi_async", "aiohttp")
TARGET_MS: Final = 20.0
_TIMED: Final = (
    "import time; started = time.perf_counter(); import {module}; "
    "print((time.perf_counter() - started) * 1000)"
)


def cumulative_ms(stderr: str, module: str) -> float:
    """The cumulative time of `module`'s top-level line in -X importtime output, in ms."""
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].rstrip() == f" {module}":
            return int(parts[1]) / 1000
    raise ValueError(f"no top-level import of {module} in the -X importtime output")


def self_times(stderr: str) -> dict[str, float]:
    """Every module in -X importtime output -> its own (self) import time in ms."""
    times = {}
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0][12:].strip().isdigit():
            times[parts[2].strip()] = int(parts[0][12:]) / 1000
    return times


def _python(arguments: list[str], env: dict[str, str], cpu: int | None) -> str:
    result = subprocess.run(
        pin([sys.executable, *arguments], cpu), capture_output=True, text=True, env=env, check=True
    )
    return result.stdout + "\n" + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=1, help="core to pin to (1)")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="osvi-bench-pycache-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    traced: dict[str, list[float]] = {module: [] for module in MODULES}
    last: dict[str, dict[str, float]] = {}
    timed: dict[str, list[float]] = {module: [] for module in MODULES}
    try:
        for module in MODULES:  # primes the bytecode caches
            _python(["-c", f"import {module}"], env, args.cpu)
        for _ in range(args.runs):
            for module in MODULES:
                output = _python(["-X", "importtime", "-c", f"import {module}"], env, args.cpu)
                traced[module].append(cumulative_ms(output, module))
                last[module] = self_times(output)
                output = _python(["-c", _TIMED.format(module=module)], env, args.cpu)
                timed[module].append(float(output.split()[0]))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    traced_median = {module: statistics.median(traced[module]) for module in MODULES}
    timed_median = {module: statistics.median(timed[module]) for module in MODULES}
    extra = traced_median["osvi_async"] - traced_median["aiohttp"]
    extra_timed = timed_median["osvi_async"] - timed_median["aiohttp"]
    extra_modules = sorted(
        ((name, ms) for name, ms in last["osvi_async"].items() if name not in last["aiohttp"]),
        key=lambda pair: -pair[1],
    )
    print(f"median of {args.runs} fresh processes each (ms):")
    print("| import | -X importtime cumulative | perf_counter around the import |")
    print("|---|---:|---:|")
    for module in MODULES:
        print(f"| {module} | {traced_median[module]:.1f} | {timed_median[module]:.1f} |")
    print(f"| osvi_async - aiohttp | {extra:+.1f} | {extra_timed:+.1f} |")
    verdict = "met" if extra <= TARGET_MS else "NOT met"
    print(f"\n`import osvi_async` adds {extra:.1f} ms over `import aiohttp`", end=" ")
    print(f"(target <= {TARGET_MS:g} ms: {verdict})")
    print("modules only `import osvi_async` loads, most self time first (last round, ms):")
    for name, self_ms in extra_modules[:8]:
        print(f"  {self_ms:6.2f}  {name}")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"importtime-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "command": " ".join(["python bench/importtime.py", *sys.argv[1:]]),
                "sdk_revision": sdk_revision(),
                "traced_ms": traced,
                "timed_ms": timed,
                "median_traced_ms": traced_median,
                "median_timed_ms": timed_median,
                "extra_ms": round(extra, 2),
                "extra_timed_ms": round(extra_timed, 2),
                "only_osvi_async_self_ms": dict(extra_modules),
            },
            indent=1,
        )
    )
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
