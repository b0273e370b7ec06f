"""How often plot.py's "95% bootstrap" interval of a mean over a few seeds holds the true mean.

plot.py --ci gives the percentile bootstrap interval of the mean over seeds (plot.bootstrap_ci). With n
seeds it resamples n values, so with 2 seeds it is [min, max], which holds the median of any continuous
distribution half of the time, not 95%. This script draws --trials samples of each size from a normal
distribution, computes the interval as plot.py does, and prints the share that holds the true mean.

    python benchmarks/bootstrap_coverage.py --seeds 2 3 5 6 --trials 1000
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot import bootstrap_ci, fail  # noqa: E402


def coverage(seeds, trials, rng):
    """The share of `trials` normal samples of size `seeds` whose interval holds the true mean (0)."""
    held = 0
    for _ in range(trials):
        low, high = bootstrap_ci(rng.normal(0.0, 1.0, seeds))
        held += low <= 0.0 <= high
    return held / trials


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail
    parser.add_argument("--seeds", nargs="+", type=int, default=[2, 3, 5, 6], help="sample sizes, as the number of seeds of a group (default: 2 3 5 6)")
    parser.add_argument("--trials", type=int, default=1000, help="samples of each size (default: %(default)s)")
    parser.add_argument("--rng-seed", type=int, default=1, help="seed of the samples (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.trials < 1 or min(args.seeds) < 2:
        fail("--trials must be >= 1 and every --seeds value >= 2")
    rng = np.random.default_rng(args.rng_seed)
    print("| seeds | share of %d intervals holding the mean |" % args.trials)
    print("|---|---|")
    for seeds in args.seeds:
        print("| %d | %.1f%% |" % (seeds, 100 * coverage(seeds, args.trials, rng)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
