"""``python -m tag_actors.conformance child|parent ...``: the command line of the suite (its package docstring says
what each role checks)."""

from __future__ import annotations

import argparse
import sys

import zmq

from tag_actors import conformance
from tag_actors import protocol as P
from tag_actors.conformance.child import check_child
from tag_actors.conformance.parent import check_parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tag_actors.conformance", description=conformance.__doc__.splitlines()[0],
                                epilog=conformance.__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=("child", "parent"), help="the role of the implementation under test")
    p.add_argument("links", nargs="+", metavar="NAME=ENDPOINT", help="each child the implementation serves "
                   "(child) or connects to (parent), and where its link listens")
    p.add_argument("--parent", required=True, help="the parent's name (its DEALER identity)")
    p.add_argument("--num-envs", type=int, required=True, help="the batch size the implementation runs")
    p.add_argument("--period", type=int, default=1, help="child: the decision period the suite announces")
    p.add_argument("--mode", choices=P.MODES, default="lockstep", help="child: the mode the suite announces")
    p.add_argument("--expects-period", action="store_true",
                   help="child: the implementation has its own period and must REJECT another")
    p.add_argument("--instruction", help="JSON space: child: what the suite sends (default: ask); parent: what "
                   "the suite's children expect (default box of 2 in [-1, 1])")
    p.add_argument("--message-space", default='{"type": "box", "shape": [4], "low": -Infinity, "high": Infinity}',
                   help="parent: JSON space of the suite's children's messages")
    p.add_argument("--fault", choices=("none", "version", "num_envs", "schema", "space"), default="none",
                   help="parent: answer the first HELLO with this faulty WELCOME and expect a REJECT")
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--episode", type=int, default=5, help="parent: ticks per scripted episode")
    p.add_argument("--start-tick", type=int, default=0, help="parent: the first tick number the children send")
    p.add_argument("--hold", type=float, default=0.3, help="seconds to hold back a DOWN to see who waits")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for any expected message")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    pairs = []
    for item in args.links:
        name, sep, endpoint = item.partition("=")
        if not sep or not name or "://" not in endpoint:
            p.error(f"link {item!r}: expected NAME=ENDPOINT, e.g. env/0=tcp://127.0.0.1:5555")
        pairs.append((name, endpoint))
    args.links = pairs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = zmq.Context()
    print(f"LevelEnv conformance, protocol version {P.PROTOCOL_VERSION}, schema {P.SCHEMA_HASH}: testing a "
          f"{args.role} ({', '.join(n for n, _ in args.links)})", flush=True)
    try:
        res = (check_child if args.role == "child" else check_parent)(args, ctx)
    finally:
        ctx.destroy(linger=0)
    passed = len(res.rows) - res.failed
    print(f"{passed} passed, {res.failed} failed", flush=True)
    return 1 if res.failed or not res.rows else 0


if __name__ == "__main__":
    sys.exit(main())
