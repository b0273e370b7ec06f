"""How likely chance alone splits runs between groups as unevenly: the exact test of a 2 x k table.

Each group is given as W/N: W of its N runs have the property (say, evaluate above 1500 by 200k). Were
all runs exchangeable, the runs that have it would fall into the groups by the multivariate
hypergeometric law; the p-value (Freeman-Halton's extension of Fisher's exact test) is the summed chance
of every split no likelier than the one seen. Counts are compared as exact integers.

A split read again each time the last group grew makes a small p likelier than its value says: with
--looks N1 N2 ... (the last group's sizes at the earlier readings) the script also gives the chance,
all runs exchangeable, that one reading or more has a p as small as the last one's (the min-p
adjustment over the readings).

    python benchmarks/split_test.py 3/5 2/7 1/8
    python benchmarks/split_test.py 3/5 2/7 2/21 --looks 8 9 11 13 15 17 19
"""
import argparse
import functools
import itertools
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot import fail  # noqa: E402

# tables enumerated at most: the split of the first k - 1 groups fixes the last one's
MAX_TABLES = 10 ** 7


def group(text):
    try:
        hits, runs = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected W/N, two whole numbers, got %r" % text) from None
    if not 0 <= hits <= runs or runs < 1:
        raise argparse.ArgumentTypeError("expected 0 <= W <= N and N >= 1, got %r" % text)
    return hits, runs


def split_p_value(groups):
    """The exact p of the split `groups` [(W_i, N_i), ...] of sum(W) runs among sum(N)."""
    runs = [n for _, n in groups]
    hits = sum(w for w, _ in groups)

    def weight(split):  # C(N_1, w_1) ... C(N_k, w_k): the split's chance times C(N, W)
        return math.prod(math.comb(n, w) for w, n in zip(split, runs))

    seen, total = weight([w for w, _ in groups]), 0
    for head in itertools.product(*(range(n + 1) for n in runs[:-1])):
        last = hits - sum(head)
        chance = weight(head + (last,)) if 0 <= last <= runs[-1] else 0
        total += chance if chance <= seen else 0
    return total / math.comb(sum(runs), hits)


def adjusted_p_value(groups, looks):
    """The chance, were all runs exchangeable, that the split of `groups` read with the last group cut
    to its first n runs, for each n in `looks` and in full, has a p <= the full split's at least once."""
    runs = [n for _, n in groups]
    hits, last = sum(w for w, _ in groups), runs[-1]
    sizes = sorted(set(looks)) + [last]
    seen, alarms = split_p_value(groups), 0
    # thousands of placements share a few hundred tables
    p_value = functools.lru_cache(maxsize=None)(lambda table: split_p_value(list(table)))

    for head in itertools.product(*(range(n + 1) for n in runs[:-1])):
        count = hits - sum(head)
        if not 0 <= count <= last:
            continue
        fixed = tuple(zip(head, runs))
        weight = math.prod(math.comb(n, w) for w, n in fixed)
        # the last group's `count` hits fall on any `count` of its runs, each placement as likely
        for places in itertools.combinations(range(last), count):
            if any(p_value(fixed + ((sum(place < size for place in places), size),)) <= seen for size in sizes):
                alarms += weight
    return alarms / math.comb(sum(runs), hits)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail
    parser.add_argument("groups", nargs="+", type=group, help="W/N per group: W of its N runs have the property")
    parser.add_argument("--looks", nargs="+", type=int, default=[],
                        help="the last group's sizes at earlier readings of the split, each below its size now")
    args = parser.parse_args(argv)
    if len(args.groups) < 2:
        fail("give two groups or more")
    if math.prod(n + 1 for _, n in args.groups[:-1]) > MAX_TABLES:
        fail("more than %d tables to enumerate; give fewer or smaller groups" % MAX_TABLES)
    hits, runs = sum(w for w, _ in args.groups), sum(n for _, n in args.groups)
    if args.looks and not all(1 <= n < args.groups[-1][1] for n in args.looks):
        fail("each of --looks must be at least 1 and below the last group's %d runs" % args.groups[-1][1])
    if args.looks and math.comb(runs, hits) > MAX_TABLES:
        fail("more than %d placements to enumerate for --looks; give fewer or smaller groups" % MAX_TABLES)
    print("split %s (%d of %d runs in all): exact p = %.3f" % (
        " / ".join("%d of %d" % g for g in args.groups), hits, runs, split_p_value(args.groups)))
    if args.looks:
        print("read also at the last group's first %s runs: adjusted p = %.3f (the chance of a p this small at one "
              "reading or more)" % (", ".join(map(str, sorted(set(args.looks)))), adjusted_p_value(args.groups, args.looks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
