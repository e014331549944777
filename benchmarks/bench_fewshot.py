"""Time the 16-shot draw on an ImageNet-size list (1000 classes x 1300 items, in memory).

Beside it, a plain rendering of Dassl's loop (defaultdict + global random.sample) on the same
list, so the ratio can be quoted (absolute times are noisy on shared machines).
"""
import argparse
import random
import statistics
import time
from collections import defaultdict

from analysis_lib.data import Item, draw_fewshot


def dassl_loop(items, shots, seed):
    random.seed(seed)
    tracker = defaultdict(list)
    for item in items:
        tracker[item.label].append(item)
    out = []
    for group in tracker.values():
        out.extend(random.sample(group, shots) if len(group) >= shots else group)
    return out


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=1300)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    items = [Item(f"/data/imagenet/images/train/n{label:08d}/{i}.JPEG", label, f"class {label}")
             for label in range(args.classes) for i in range(args.per_class)]
    ours, subset = best_of(args.repeats, lambda: draw_fewshot(items, args.shots, random.Random(1)))
    reference, expected = best_of(args.repeats, lambda: dassl_loop(items, args.shots, 1))
    assert subset == expected
    print(f"{len(items):,} items -> {len(subset):,} ({args.shots}-shot), median of {args.repeats}:")
    print(f"  draw_fewshot      {ours * 1e3:8.1f} ms")
    print(f"  Dassl-style loop  {reference * 1e3:8.1f} ms   (ratio {ours / reference:.2f})")


if __name__ == "__main__":
    main()
