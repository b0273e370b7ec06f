"""Whole-loop training speed of meow_continuous_action.py on Hopper-v4, after learning starts.

    python benchmarks/bench_loop.py                       # every variant below, in one run
    python benchmarks/bench_loop.py --variants default sac --steps 5000
    python benchmarks/bench_loop.py --compile-time        # also the first-run compile time, cold and warm cache

Runs the real training loop of the script (env stepping, acting, replay buffer, one update per step,
TensorBoard, the log-point checks) in a temporary directory, once per variant:

  default          the plain command: compiled update and sampling, the default threads
  eager            --no-compile, the default threads
  default-1thread  compiled, --torch-threads 1
  eager-1thread    --no-compile, --torch-threads 1
  per-tensor       the default, but the update keeps one tensor per parameter (no flat buffer): what
                   flatten_parameters buys
  straightforward  MEow done the obvious way (bench_update.py (2), mirroring the authors' code), eager
  sac              the same loop with SAC in MEow's place: bench_update.py's SAC update (3) and its actor acting

The peers run at the default threads, as each program would alone. It reports environment steps per
second over the last --steps steps (no evaluation in between), from the wall times of the logged
`charts/SPS` points; the --warmup-steps updates before them are not timed (for the compiled variants
they include the compilation, whatever the run's length: the script's rule to compile only runs of
20,000+ updates is lifted here).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import meow_continuous_action as meow  # noqa: E402
from bench_update import make_sac_update, make_straightforward_update  # noqa: E402

# variant -> (compile, torch threads (None: the script's default), drop-in for meow.make_update or None)
VARIANTS = ["default", "eager", "default-1thread", "eager-1thread", "per-tensor", "straightforward", "sac"]


def per_tensor_update(policy, target_policy, lr, gamma, tau, max_grad_norm, compile=False):
    """make_update without flatten_parameters: per-tensor (fused) Adam, foreach clip and Polyak."""
    params, target_params = list(policy.parameters()), list(target_policy.parameters())
    optimizer = meow.make_optimizer(params, lr)
    loss_fn = meow.maybe_compile(meow.meow_loss, compile, params[0].device, "the update")

    def update(batch):
        policy.use_dropout(True)
        with policy.dropout_masks(2, batch.obs.shape[0]):  # one set per Q column
            loss = loss_fn(policy, target_policy, batch, gamma)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(target_params, params, tau)
        return loss.detach()

    return update, optimizer


def sac_in_meows_place(policy, target_policy, lr, gamma, tau, max_grad_norm, compile=False):
    """A drop-in for meow.make_update that trains SAC instead, and makes SAC's actor act in the loop."""
    obs_dim = policy.prior.log_std_net.net[0].in_features
    update = make_sac_update(obs_dim, policy.act_dim, gamma, tau, lr, device=next(policy.parameters()).device)
    policy.sample = lambda obs, deterministic=False: update.actor(obs)  # the loop's acting, read after this call
    return update, update.critic_optimizer


def variant_settings(variant):
    compile = variant in ("default", "default-1thread", "per-tensor")
    threads = 1 if variant.endswith("1thread") else None
    make_update = {"per-tensor": per_tensor_update, "straightforward": make_straightforward_update, "sac": sac_in_meows_place}.get(variant)
    return compile, threads, make_update


def training_sps(args, variant):
    compile, threads, make_update = variant_settings(variant)
    shipped, min_updates = meow.make_update, meow.COMPILE_MIN_UPDATES
    meow.make_update = make_update or shipped
    meow.COMPILE_MIN_UPDATES = 0
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            meow.main(meow.Args(env_id=args.env_id, seed=args.seed, learning_starts=args.learning_starts,
                                total_timesteps=args.learning_starts + args.warmup_steps + args.steps, eval_frequency=10 ** 9,
                                log_frequency=args.learning_starts, torch_threads=threads, compile=compile))
            (run_dir,) = glob.glob("runs/*")
            acc = EventAccumulator(run_dir)
            acc.Reload()
            points = {e.step: e.wall_time for e in acc.Scalars("charts/SPS")}
        finally:
            os.chdir(cwd)
            meow.make_update, meow.COMPILE_MIN_UPDATES = shipped, min_updates
    start = args.learning_starts + args.warmup_steps
    return args.steps / (points[start + args.steps] - points[start])


COMPILE_TIME = """
import sys, time, torch
sys.path[:0] = [%r, %r]
import meow_continuous_action as meow
from bench_update import make_meow, random_buffer
policy, target = make_meow(11, 3)
update, _ = meow.make_update(policy, target, 1e-3, 0.99, 0.005, 30.0, compile=True)
sample = meow.maybe_compile(policy.sample, True, "cpu", "the action sampling")
rb = random_buffer(11, 3)
start = time.time()
with torch.no_grad():
    sample(torch.zeros(1, 11))
update(rb.sample(256))
print("COMPILE_SECONDS %%.1f" %% (time.time() - start))
""" % (os.path.dirname(HERE), HERE)


def compile_seconds(cache_dir):
    """Seconds the first sample and update take to compile in a new process, with the given inductor cache."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", COMPILE_TIME], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split("COMPILE_SECONDS")[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Hopper-v4")
    parser.add_argument("--steps", type=int, default=3000, help="training steps timed after learning starts")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random-action steps first (not timed)")
    parser.add_argument("--warmup-steps", type=int, default=1000, help="training steps after learning starts, not timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--compile-time", action="store_true", help="also time the first compilation in a new process, with a cold and a warm cache")
    args = parser.parse_args()
    if args.steps % args.learning_starts or args.warmup_steps % args.learning_starts:
        parser.error("--steps and --warmup-steps must be multiples of --learning-starts (the SPS points are logged at its multiples)")

    results = {}
    for variant in args.variants:
        results[variant] = training_sps(args, variant)
        print("%s: %.1f steps/s" % (variant, results[variant]), flush=True)
    print("\n%s, torch %s, default threads %d, %d steps timed after %d random and %d untimed training ones"
          % (args.env_id, torch.__version__, meow.default_threads(), args.steps, args.learning_starts, args.warmup_steps))
    print("| variant | training SPS | vs sac | vs straightforward |")
    print("|---|---|---|---|")
    for variant, sps in results.items():
        ratios = ["%.2fx" % (sps / results[peer]) if peer in results else "-" for peer in ("sac", "straightforward")]
        print("| %s | %.1f | %s | %s |" % (variant, sps, ratios[0], ratios[1]))
    if args.compile_time:
        with tempfile.TemporaryDirectory() as cache:
            cold = compile_seconds(cache)
            warm = compile_seconds(cache)
        print("compiling the update and the sampling in a new process: %.1f s with an empty cache, %.1f s with a warm one" % (cold, warm))


if __name__ == "__main__":
    main()
