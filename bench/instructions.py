"""The SDK's own cost per call in CPU instructions, which a noisy machine does not blur.

bench/overhead.py times calls with the network stubbed out; its medians move by a microsecond
or more between runs on a busy machine. This runs the same stubbed calls under valgrind's
callgrind, which counts instructions (the same count for the same inputs, whatever else runs),
twice with different call counts, and divides the difference by the extra calls: start-up,
imports and warm-up cancel out.

Usage: python bench/instructions.py [--calls 2000] [--extra 4000]   (needs valgrind)
Runs a child process per measurement: python bench/instructions.py --child MODE N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(r"Collected : (\d+)")


def child(mode: str, calls: int, *, stdlib_json: bool) -> None:
    """Make `calls` stubbed calls of one path (after 200 to warm up)."""
    if stdlib_json:
        sys.modules["orjson"] = None  # type: ignore[assignment] # as on a default install
    sys.path.insert(0, str(ROOT))
    import osvi_async._aiohttp as transport_module
    from bench import overhead

    transport_module.AiohttpTransport.send = overhead._stub_send  # type: ignore[method-assign]
    path = overhead.single if mode == "inject_context" else overhead.bulk

    async def main() -> None:
        client = overhead.OsviClient("0123456789abcdef", base_url="http://127.0.0.1:9")
        await path(client, 200, 64)
        await path(client, calls, 64)

    asyncio.run(main())


def instructions(mode: str, calls: int, *, stdlib_json: bool) -> int:
    """Instructions callgrind counted for a child making `calls` calls of `mode`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                mode,
                str(calls),
                *(["--stdlib-json"] if stdlib_json else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = COLLECTED.search(result.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--extra", type=int, default=4000)
    parser.add_argument(
        "--stdlib-json",
        action="store_true",
        help="block orjson, as on a default install (the SDK then uses the json module)",
    )
    parser.add_argument("--modes", default="inject_context,inject_many")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), stdlib_json=args.stdlib_json)
        return
    backend = "json (default install)" if args.stdlib_json else "orjson if installed"
    print(
        f"SDK instructions per call, network stubbed out (callgrind, c=64, {args.extra} calls, "
        f"{backend}):"
    )
    for mode in args.modes.split(","):
        low = instructions(mode, args.calls, stdlib_json=args.stdlib_json)
        high = instructions(mode, args.calls + args.extra, stdlib_json=args.stdlib_json)
        print(f"  {mode:15} {(high - low) / args.extra:10,.0f}")


if __name__ == "__main__":
    main()
