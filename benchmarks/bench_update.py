"""Time one gradient update: MEow as shipped vs. a straightforward MEow vs. SAC.

    python benchmarks/bench_update.py                 # Hopper-v4 and Humanoid-v4 sizes, batch 256
    python benchmarks/bench_update.py --repeats 500 --threads 1
    python benchmarks/bench_update.py --envs Hopper-v4 --no-compile --profile
    python benchmarks/bench_update.py --breakdown     # what each part of the network costs
    python benchmarks/bench_update.py --threads 1 --against c43349e   # also (0): the update as at a commit

All at the training script's default threads unless --threads says otherwise.
(1) shipped:          `make_update` from meow_continuous_action.py as the default command runs it (compiled;
                      eager with --no-compile, and the eager one is also shown): one pass through the
                      couplings per Q column, each with its own dropout masks, on a leading axis of 2 over
                      which the observation broadcasts (its parts run once), reward shifts on observations
                      only, the target value without any coupling layer, parameters in one flat buffer (one
                      fused Adam, clip and Polyak step), the dropout masks drawn at once, no host
                      synchronisation.
(2) straightforward:  the same maths done the obvious way (as in the authors' code): the batch doubled
                      so that each half meets one reward shift, the target value also pushed through the
                      target's couplings, `train()` each step, per-parameter Polyak, default Adam, and
                      `loss.item()` every step.
(3) SAC:              the usual SAC update (actor 256x256 tanh-Gaussian, twin critics 256x256, target
                      critics, autotuned temperature), one actor and critic step per call.
Prints the median milliseconds per update over --repeats calls after --warmup calls, and the ratios.
--inductor KEY=VALUE... also times (1i), (1) compiled with those inductor options (e.g. max_autotune=True).
--against COMMIT also times (0), `make_update` of meow_continuous_action.py and flow_layers.py as at that
git commit, interleaved with the others, so that a change is measured against its parent on one machine.
--breakdown also times (1) with one part of the network removed at a time (in both the online and the
target network): the difference is what that part costs, forward and backward. torch.profiler's
per-operator times (--profile) inflate the many small element-wise operators several times over.
"""
import argparse
import ast
import atexit
import contextlib
import importlib.util
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import meow_continuous_action as meow  # noqa: E402
from flow_layers import Dropout, Swish  # noqa: E402

SIZES = {"Hopper-v4": (11, 3), "Humanoid-v4": (376, 17)}


# ----------------------------------------------------------------------------- (2) straightforward MEow
def straightforward_loss(policy, target, batch, gamma):
    """MEow's loss without the shortcuts: returns (loss, q for shift 1, q for shift 2)."""
    n = batch.obs.shape[0]
    obs2, act2 = torch.cat([batch.obs, batch.obs]), torch.cat([batch.actions, batch.actions])
    energy, _ = policy.energy_and_normaliser(obs2, act2)  # the whole flow, twice the batch
    shift = policy.reward_shift(batch.obs)
    q = policy.alpha * (torch.cat([shift[:, 0], shift[:, 1]]) + energy)
    with torch.no_grad():
        # V_target(s') read off the flow at an arbitrary action: V = Q - alpha * log pi
        next2 = torch.cat([batch.next_obs, batch.next_obs])
        some_action = torch.zeros(2 * n, batch.actions.shape[1], device=next2.device)
        energy_t, log_z_t = target.energy_and_normaliser(next2, some_action)
        shift_t = target.reward_shift(batch.next_obs)
        q_t = target.alpha * (torch.cat([shift_t[:, 0], shift_t[:, 1]]) + energy_t)
        v_t = q_t - target.alpha * (energy_t - log_z_t)
        v_next = torch.min(v_t[:n], v_t[n:])
        y = batch.rewards + gamma * (1 - batch.terminated) * v_next
    return F.mse_loss(q, torch.cat([y, y])), q[:n], q[n:]


def make_straightforward_update(policy, target, lr=1e-3, gamma=0.99, tau=0.005, max_grad_norm=30.0, compile=False):
    """The same signature and return value as meow.make_update (compile is ignored)."""
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)

    def update(batch):
        policy.train()
        loss, _, _ = straightforward_loss(policy, target, batch, gamma)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        for p, t in zip(policy.parameters(), target.parameters()):
            t.data.copy_(tau * p.data + (1 - tau) * t.data)
        loss.item()  # the host waits for the device every step (as a loop that reads the loss each step)
        return loss.detach()

    return update, optimizer


# ----------------------------------------------------------------------------- (3) SAC
def mlp(n_in, n_out, hidden=256):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class Actor(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim)

    def forward(self, obs):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(-5, 2)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        action = torch.tanh(u)
        return action, log_prob - torch.log1p(-action.pow(2) + 1e-6).sum(-1)


def make_sac_update(obs_dim, act_dim, gamma=0.99, tau=0.005, lr=1e-3, device="cpu"):
    actor = Actor(obs_dim, act_dim).to(device)
    critics = nn.ModuleList([mlp(obs_dim + act_dim, 1) for _ in range(2)]).to(device)
    targets = nn.ModuleList([mlp(obs_dim + act_dim, 1) for _ in range(2)]).to(device)
    targets.load_state_dict(critics.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True, device=device)
    q_opt = torch.optim.Adam(critics.parameters(), lr=lr)
    pi_opt = torch.optim.Adam(actor.parameters(), lr=lr)
    a_opt = torch.optim.Adam([log_alpha], lr=lr)
    target_entropy = -float(act_dim)
    c_params, t_params = list(critics.parameters()), list(targets.parameters())

    def q_values(nets, obs, actions):
        x = torch.cat([obs, actions], dim=-1)
        return torch.cat([net(x) for net in nets], dim=-1)

    def update(batch):
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = actor(batch.next_obs)
            next_q = q_values(targets, batch.next_obs, next_a).min(-1).values - alpha * next_logp
            y = batch.rewards + gamma * (1 - batch.terminated) * next_q
        q_loss = F.mse_loss(q_values(critics, batch.obs, batch.actions), y[:, None].expand(-1, 2))
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        a, logp = actor(batch.obs)
        pi_loss = (alpha * logp - q_values(critics, batch.obs, a).min(-1).values).mean()
        pi_opt.zero_grad()
        pi_loss.backward()
        pi_opt.step()
        alpha_loss = (-log_alpha.exp() * (logp.detach() + target_entropy)).mean()
        a_opt.zero_grad()
        alpha_loss.backward()
        a_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(t_params, c_params, tau)
        return q_loss.detach()

    update.actor, update.critic_optimizer = actor, q_opt  # for bench_loop.py's SAC loop
    return update


# ----------------------------------------------------------------------------- timing
def script_at(commit):
    """meow_continuous_action.py as at `commit`, with that commit's flow_layers.py, imported from `git show`
    as a module of its own (the working tree's copies stay imported beside it)."""
    folder = tempfile.mkdtemp(prefix="meow_at_")
    atexit.register(shutil.rmtree, folder, True)
    for name in ("meow_continuous_action.py", "flow_layers.py"):
        shown = subprocess.run(["git", "-C", ROOT, "show", "%s:%s" % (commit, name)], capture_output=True, text=True)
        if shown.returncode:
            print("error: cannot read %s at %s: %s" % (name, commit, (shown.stderr.strip().splitlines() or ["git failed"])[0]), file=sys.stderr)
            sys.exit(2)
        with open(os.path.join(folder, name), "w") as f:
            f.write(shown.stdout)
    own_layers = sys.modules.pop("flow_layers")
    sys.path.insert(0, folder)
    try:
        name = "meow_at_%s" % "".join(c if c.isalnum() else "_" for c in commit)
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "meow_continuous_action.py"))
        script = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    finally:
        sys.path.remove(folder)
        sys.modules["flow_layers"] = own_layers
    return script


def make_meow(obs_dim, act_dim, script=meow):
    policy = script.FlowPolicy(obs_dim, act_dim, 0.25, -0.3, -5.0)
    target = script.FlowPolicy(obs_dim, act_dim, 0.25, -0.3, -5.0).eval()
    target.load_state_dict(policy.state_dict())
    target.requires_grad_(False)
    return policy, target


def random_buffer(obs_dim, act_dim, n=20_000):
    rb = meow.ReplayBuffer(n, obs_dim, act_dim, "cpu")
    rb.add(torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.randn(n, obs_dim), (torch.rand(n) < 0.01).float())
    return rb


def median_ms(updates, rb, batch_size, warmup, repeats, block=10):
    """Median milliseconds per call of each update in `updates` (a dict), timed in interleaved blocks of
    `block` calls so that a slower or faster spell of the machine falls on all of them alike."""
    for update in updates.values():
        for _ in range(warmup):
            update(rb.sample(batch_size))
    times = {name: [] for name in updates}
    for _ in range(max(1, repeats // block)):
        for name, update in updates.items():
            for _ in range(block):
                batch = rb.sample(batch_size)
                start = time.perf_counter()
                update(batch)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def shipped_update(policy, target, compile=False, script=meow):
    """(1): make_update of meow_continuous_action.py (or of `script`) with the Hopper defaults."""
    return script.make_update(policy, target, 1e-3, 0.99, 0.005, 30.0, compile=compile)[0]


def inductor_option(text):
    """KEY=VALUE of --inductor: the value as a Python literal (True, 3), else as a string (CPP,ATEN)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, got %r" % text)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def with_inductor_options(options, obs_dim, act_dim):
    """(1) compiled with these inductor options (torch.compile's `options`) on top of the script's."""
    compile_ = torch.compile
    torch.compile = lambda fn, **kwargs: compile_(fn, options=options, **kwargs)
    try:
        return shipped_update(*make_meow(obs_dim, act_dim), compile=True)
    finally:
        torch.compile = compile_


def without(part, obs_dim, act_dim):
    """The shipped update of a MEow network from which `part` is removed (an ablation for timing only)."""
    policy, target = make_meow(obs_dim, act_dim)
    identity = lambda x: x  # noqa: E731
    for net in (policy, target):
        for module in net.modules():
            if part == "Swish activations" and isinstance(module, Swish) or part == "LayerNorms" and isinstance(module, nn.LayerNorm):
                module.forward = identity
            if part == "dropout (masks and products)" and isinstance(module, Dropout):
                module.p = 0.0
        if part == "dropout (masks and products)":
            net.dropout_masks = lambda *batch_shape: contextlib.nullcontext()
        if part == "reward-shift nets b_k(s)":
            net.reward_shift.forward = lambda obs: obs.new_zeros(obs.shape[0], 2)
    return shipped_update(policy, target)


def breakdown(obs_dim, act_dim, rb, args):
    parts = ["reward-shift nets b_k(s)", "Swish activations", "dropout (masks and products)", "LayerNorms"]
    updates = {"nothing": shipped_update(*make_meow(obs_dim, act_dim))}
    updates.update((part, without(part, obs_dim, act_dim)) for part in parts)
    ms = median_ms(updates, rb, args.batch_size, args.warmup, args.repeats)
    print("\n| (1) without | ms per update | cost of the part |\n|---|---|---|")
    for name, t in ms.items():
        print("| %s | %.2f | %s |" % (name, t, "-" if name == "nothing" else "%.2f ms (%.0f%%)" % (ms["nothing"] - t, 100 * (ms["nothing"] - t) / ms["nothing"])))
    print("(the Swish activations include those of the reward-shift nets, so the parts overlap)\n")


def profile(update, rb, batch_size, calls=50):
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        for _ in range(calls):
            update(rb.sample(batch_size))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=meow.default_threads(), help="torch CPU threads (default: the training script's default, %(default)s here)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="time (1) eager only (the default also times it compiled)")
    parser.add_argument("--against", metavar="COMMIT", help="also time (0): (1) as at this git commit, interleaved with the others")
    parser.add_argument("--inductor", nargs="+", type=inductor_option, default=[], metavar="KEY=VALUE",
                        help="also time (1i): (1) compiled with these inductor options, e.g. max_autotune=True cpp_wrapper=True")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of the shipped update")
    parser.add_argument("--breakdown", action="store_true", help="also time the shipped update without each part of the network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    before = script_at(args.against) if args.against else None

    print("torch %s, %d thread(s), batch %d, median of %d updates after %d warm-up, variants interleaved in blocks of 10" % (torch.__version__, args.threads, args.batch_size, args.repeats, args.warmup))
    header = "| sizes | (1) MEow shipped%s | (2) MEow straightforward | (3) SAC | (1)/(2) | (1)/(3) |" % (", compiled" if args.compile else "")
    header += " (1) eager |" if args.compile else ""
    header += " (0) at %s | (1)/(0) | (0)/(3) |" % args.against if before else ""
    header += " (1i) %s | (1i)/(1) |" % " ".join("%s=%s" % kv for kv in args.inductor) if args.inductor else ""
    print(header)
    print("|---" * header.count(" |") + "|")
    for env_id in args.envs:
        obs_dim, act_dim = SIZES[env_id]
        rb = random_buffer(obs_dim, act_dim)
        updates = {}
        updates["shipped"] = shipped_update(*make_meow(obs_dim, act_dim), compile=args.compile)
        updates["straightforward"], _ = make_straightforward_update(*make_meow(obs_dim, act_dim))
        updates["sac"] = make_sac_update(obs_dim, act_dim)
        if args.compile:
            updates["eager"] = shipped_update(*make_meow(obs_dim, act_dim))
        if before:
            updates["before"] = shipped_update(*make_meow(obs_dim, act_dim, before), compile=args.compile, script=before)
        if args.inductor:
            updates["inductor"] = with_inductor_options(dict(args.inductor), obs_dim, act_dim)
        ms = median_ms(updates, rb, args.batch_size, args.warmup, args.repeats)
        t1, t2, t3 = ms["shipped"], ms["straightforward"], ms["sac"]
        row = "| %s (obs %d, act %d) | %.2f ms | %.2f ms | %.2f ms | %.2f | %.2f |" % (env_id, obs_dim, act_dim, t1, t2, t3, t1 / t2, t1 / t3)
        if args.compile:
            row += " %.2f ms |" % ms["eager"]
        if before:
            row += " %.2f ms | %.2f | %.2f |" % (ms["before"], t1 / ms["before"], ms["before"] / t3)
        if args.inductor:
            row += " %.2f ms | %.2f |" % (ms["inductor"], ms["inductor"] / t1)
        print(row, flush=True)
        if args.breakdown:
            breakdown(obs_dim, act_dim, rb, args)
        if args.profile:
            profile(updates["shipped"], rb, args.batch_size)


if __name__ == "__main__":
    main()
