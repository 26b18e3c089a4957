"""Print a summary of a benchmarl_*.csv learning curve: mean_return at given env_steps checkpoints
(the iteration whose env_steps is nearest at or below each checkpoint, plus a 5-iteration mean around it).
Plain python, no dependencies.  Usage: python benchmarks/benchmarl/summarize.py FILE.csv [60000 300000 600000]"""
import csv
import sys
from collections import defaultdict

path = sys.argv[1]
points = [int(x) for x in sys.argv[2:]] or [60_000, 300_000, 600_000]
curves = defaultdict(list)
with open(path) as f:
    for r in csv.DictReader(f):
        curves[(r["method"], r["seed"])].append((int(r["env_steps"]), float(r["mean_return"])))
for (method, seed), c in curves.items():
    c.sort()
    out = []
    for p in points:
        idx = [i for i, (s, _) in enumerate(c) if s <= p]
        if not idx or c[-1][0] < p:
            out.append(f"{p // 1000}k=n/a")
            continue
        i = idx[-1]
        win = [v for _, v in c[max(0, i - 4): i + 1]]
        out.append(f"{p // 1000}k={c[i][1]:.2f} (last5 {sum(win) / len(win):.2f})")
    print(f"{method} seed {seed}: max_steps={c[-1][0]} best={max(v for _, v in c):.2f} | " + "  ".join(out))
