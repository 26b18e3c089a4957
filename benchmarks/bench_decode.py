"""Per-message cost of decoding a per-tick UP: the generic path (decode, then ``check_tick_message``: what every
message took before the handshake agreed its arrays) against the agreed path (one comparison of the header's
array list with the link's agreement, then zero-copy views). Side by side in one process, interleaved, best of N.

    python benchmarks/bench_decode.py [--envs 1 64 1024] [--obs 16] [--n 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tag_actors import protocol as P
from tag_actors.spaces import Box
from tag_actors.wire import decode, encode


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--envs", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--obs", type=int, default=16)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{'num_envs':>8} {'generic us':>11} {'agreed us':>10} {'agreed/generic':>15}")
    for b in args.envs:
        msg = P.up_message(np.zeros((b, args.obs), np.float32), np.zeros(b, np.float32), np.zeros(b, np.uint8),
                           5, 100, False)
        msg.sender = "env/0"
        frames = [bytes(f) for f in encode(msg)]
        agreed = {P.Kind.UP: P.up_arrays(Box((args.obs,)), b)}

        def generic(frames: list[bytes] = frames) -> None:
            P.check_tick_message(decode(frames))

        def checked(frames: list[bytes] = frames, agreed: dict = agreed) -> None:
            decode(frames, agreed=agreed)

        best = {generic: float("inf"), checked: float("inf")}
        for _ in range(args.repeats):
            for fn in (generic, checked):
                start = time.perf_counter()
                for _ in range(args.n):
                    fn()
                best[fn] = min(best[fn], (time.perf_counter() - start) / args.n)
        g, c = best[generic] * 1e6, best[checked] * 1e6
        print(f"{b:>8} {g:>11.2f} {c:>10.2f} {c / g:>15.3f}")


if __name__ == "__main__":
    main()
