#!/usr/bin/env python3
"""Demo payload: estimate pi by Monte Carlo from a seed and a sample count read from input."""
import json
import random
import sys

with open("params.json") as f:
    params = json.load(f)
rng = random.Random(params["seed"])
n = params["samples"]
inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
result = {"samples": n, "inside": inside, "pi": 4 * inside / n, "args": sys.argv[1:]}
with open("pi.json", "w") as f:
    json.dump(result, f, indent=2)
print(f"pi ~= {result['pi']:.5f} from {n} samples")
