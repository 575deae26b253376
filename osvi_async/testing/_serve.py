"""Run the emulator as a standalone server, for trying a client or an app by hand.

``serve`` runs until SIGINT or SIGTERM and then returns, so a process manager, a terminal's
Ctrl+C and a test's ``terminate()`` all end it cleanly with exit status 0. ``main`` is the
command line of both ``python -m osvi_async.testing`` and ``osvi-async serve``: one parser, so
both list the same options in ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

from osvi_async._loop import run
from osvi_async._validation import check_api_token
from osvi_async.errors import ClientValidationError
from osvi_async.testing._capacity import REFUSAL_STATUSES, CapacityModel
from osvi_async.testing._emulator import DEFAULT_HOST, OsviEmulator
from osvi_async.testing._faults import ENDPOINT_NAMES, FaultKind, FaultPlan

__all__ = ["DEFAULT_PORT", "main", "serve"]

DEFAULT_PROG: Final = "python -m osvi_async.testing"
DEFAULT_PORT: Final = 8787
"""The command line's default port; ``serve`` and the command line take 0 for a free port."""

_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


async def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    plan: FaultPlan | None = None,
    *,
    on_ready: Callable[[OsviEmulator], None] | None = None,
    capacity: CapacityModel | None = None,
) -> None:
    """Serve the emulator until SIGINT or SIGTERM arrives (or this coroutine is cancelled).

    Args:
        host: Address to bind; the loopback default keeps the emulator private.
        port: Port to bind; 0 picks a free one (read it from the emulator in ``on_ready``).
        token: The API token to accept; a generated 16-character one when None.
        plan: Failures to inject; none when None.
        on_ready: Called once the socket is listening, with the running emulator.
        capacity: How much the API serves at once; no limit when None.

    Raises:
        OSError: The address could not be bound.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in _STOP_SIGNALS:
        # Signal handlers exist only in the main thread of a Unix process; elsewhere the
        # caller stops the server by cancelling this coroutine.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        emulator = OsviEmulator(
            api_token=token, host=host, port=port, fault_plan=plan, capacity=capacity
        )
        async with emulator as emu:
            if on_ready is not None:
                on_ready(emu)
            await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _finite(text: str) -> float:
    """A float that is a number and finite: nan passes every range check (all compare False)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _rate(text: str) -> float:
    value = _finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (`prog: error: ... (see prog --help)`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _token(text: str) -> str:
    """A token the client would accept too (16 printable ASCII characters): serving one that
    every client refuses would only move the error to the first request."""
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty (omit --token to have one generated)")
    try:
        return check_api_token(text, env_var="OSVI_API_TOKEN")
    except ClientValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("api_token", "the token")) from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _schedule(text: str) -> tuple[tuple[float, int], ...]:
    """``"T:N,T:N"``: at T seconds after the first request, the limit becomes N."""
    steps: list[tuple[float, int]] = []
    for step in text.split(","):
        at, sep, limit = step.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected T:N pairs like 10:4,20:8, got {text!r}")
        steps.append((_non_negative(at.strip()), _positive_int(limit.strip())))
    return tuple(steps)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within [0, 65535], got {text}")
    return value


def _parser(prog: str) -> argparse.ArgumentParser:
    failure_kinds = [kind.value for kind in FaultKind if kind is not FaultKind.LATENCY]
    parser = _Parser(
        prog=prog,
        description="Serve an in-memory emulator of the OSVI Chat v1 API until interrupted.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (%(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port, 0 for a free one (%(default)s)"
    )
    parser.add_argument(
        "--token",
        type=_token,
        help="API token to accept, 16 printable ASCII characters (default: a generated one)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_rate,
        default=0.0,
        help="share of calls to the --fail-endpoint endpoints that fail, in [0, 1] (%(default)s)",
    )
    parser.add_argument(
        "--fail-kind",
        choices=failure_kinds,
        default=FaultKind.ENGINE_ERROR.value,
        help="how those calls fail (%(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0.0,
        help="delay added to every call to those endpoints, in milliseconds (%(default)s)",
    )
    parser.add_argument(
        "--fail-endpoint",
        action="append",
        choices=ENDPOINT_NAMES,
        metavar="NAME",
        help=(
            "endpoint the failures and the latency apply to; repeat for several "
            f"({', '.join(ENDPOINT_NAMES)}; default: inject_context)"
        ),
    )
    parser.add_argument("--seed", type=int, help="seed for the failures (default: random)")
    capacity = parser.add_argument_group(
        "capacity model", "serve at most N inject_context requests at once (docs/testing.md)"
    )
    capacity.add_argument(
        "--capacity", type=_positive_int, metavar="N", help="requests served at once (no limit)"
    )
    capacity.add_argument(
        "--service-time",
        type=_finite,
        default=0.05,
        metavar="S",
        help="seconds each request is served (%(default)s)",
    )
    capacity.add_argument(
        "--jitter",
        type=_finite,
        default=0.0,
        metavar="F",
        help="service times vary uniformly by this share, in [0, 1) (%(default)s)",
    )
    capacity.add_argument(
        "--queue-limit",
        type=_non_negative_int,
        default=0,
        metavar="Q",
        help="requests that may wait for a slot; beyond, refused (%(default)s)",
    )
    capacity.add_argument(
        "--refusal-status",
        type=int,
        choices=REFUSAL_STATUSES,
        default=429,
        help="429 (JSON, Retry-After) or 503 (HTML, Retry-After) (%(default)s)",
    )
    capacity.add_argument(
        "--capacity-schedule",
        type=_schedule,
        default=(),
        metavar="T:N,...",
        help="at T seconds after the first request the limit becomes N, e.g. 10:4,20:16",
    )
    return parser


_CAPACITY_OPTIONS: Final = {
    "service_time": "--service-time",
    "jitter": "--jitter",
    "queue_limit": "--queue-limit",
    "refusal_status": "--refusal-status",
    "capacity_schedule": "--capacity-schedule",
}


def _capacity(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CapacityModel | None:
    """The model the capacity options describe; a usage error when they do not make one."""
    if args.capacity is None:
        given = [
            flag
            for name, flag in _CAPACITY_OPTIONS.items()
            if args.__dict__[name] != parser.get_default(name)
        ]
        if given:
            parser.error(f"{given[0]} needs --capacity")
        return None
    try:
        return CapacityModel(
            limit=args.capacity,
            service_time=args.service_time,
            jitter=args.jitter,
            queue_limit=args.queue_limit,
            refusal_status=args.refusal_status,
            schedule=args.capacity_schedule,
        )
    except ValueError as exc:
        message = str(exc)
        for field, flag in (("service_time", "--service-time"), ("jitter", "--jitter")):
            message = message.replace(field, flag)
        parser.error(message.replace("schedule", "--capacity-schedule"))


def main(
    argv: Sequence[str] | None = None, *, prog: str = DEFAULT_PROG, event_loop: str | None = None
) -> int:
    """Run the emulator from the command line; returns the process exit status.

    Prints the URL and the token to use, then serves until SIGINT or SIGTERM (exit status 0).
    Exit status 1 when the address cannot be bound, 2 for bad arguments. `prog` is the
    command name that usage and ``--help`` show. `event_loop`: "auto" (uvloop when
    installed), "asyncio" or "uvloop"; None reads ``$OSVI_EVENT_LOOP`` (see ``_loop.run``).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    capacity = _capacity(parser, args)
    plan = FaultPlan(
        seed=args.seed,
        latency=1.0 if args.latency_ms > 0 else 0.0,
        latency_seconds=args.latency_ms / 1000,
        endpoints=args.fail_endpoint,
        **{args.fail_kind: args.fail_rate},
    )
    generated = args.token is None

    def announce(emu: OsviEmulator) -> None:
        note = " (generated demo token)" if generated else ""
        print(f"OSVI emulator listening on {emu.base_url}", flush=True)
        print(f"API token: {emu.api_token}{note}", flush=True)
        if capacity is not None:
            print(f"Capacity: {_describe(capacity)}", flush=True)
        print("Stop with Ctrl+C or SIGTERM.", flush=True)

    try:
        server = serve(args.host, args.port, args.token, plan, on_ready=announce, capacity=capacity)
        run(server, event_loop=event_loop)
    except ClientValidationError as exc:  # an unknown loop, or uvloop asked for and missing
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe(model: CapacityModel) -> str:
    """One line for the announcement: what a client will meet."""
    text = (
        f"{model.limit} at once, {model.service_time * 1000:g} ms each"
        f" (+/-{model.jitter:.0%}), queue {model.queue_limit}, then {model.refusal_status}"
    )
    if model.schedule:
        text += ", schedule " + ", ".join(f"{at:g}s:{limit}" for at, limit in model.schedule)
    return text
