"""The value bias of a run (ValueBias, the same text in both scripts): the soft return G_t collected from
each state against the network's Q, its normalised bias, the one warning, and a trajectory left as it was."""
import csv
import glob
import os
import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import meow_continuous_action as meow
import meow_isaacgym as mig

GAMMA, ALPHA = 0.5, 0.5


def play(bias, rewards, log_probs, values, tail=None):
    """One env plays one episode through `bias`; `tail`: V_target(s_T) of a time-out."""
    for t, (r, log_prob) in enumerate(zip(rewards, log_probs)):
        bias.act(torch.tensor([log_prob]), torch.tensor(values[t]).min().reshape(1))
        last = t == len(rewards) - 1
        bias.step(torch.tensor([r]), last, tail=torch.tensor([tail]) if last and tail is not None else None)


# r = (1, 2, 3), log pi = (0.2, -0.4, 0.6), gamma = alpha = 0.5; V columns per step, their min (0.5, 2, -1)
EPISODE = dict(rewards=[1.0, 2.0, 3.0], log_probs=[0.2, -0.4, 0.6], values=[[1.0, 0.5], [2.0, 3.0], [-1.0, 0.0]])
# Q_t = alpha log pi_t + min_k V_k(s_t): 0.1 + 0.5, -0.2 + 2, 0.3 - 1 = 0.6, 1.8, -0.7
MEAN_Q = (0.6 + 1.8 - 0.7) / 3
# G_2 = 3; G_1 = 2 + 0.5 * 3 - 0.5 * (0.5 * 0.6) = 3.35; G_0 = 1 + 0.5 * 2 + 0.25 * 3 - 0.5 * (0.5 * -0.4 + 0.25 * 0.6) = 2.775
MEAN_G_TERMINATED = (3.0 + 3.35 + 2.775) / 3
# a time-out from V_target(s_3) = 10 adds gamma^(3 - t) * 10 = 1.25, 2.5, 5 to G_0, G_1, G_2
MEAN_G_TIMED_OUT = (3.0 + 5.0 + 3.35 + 2.5 + 2.775 + 1.25) / 3
# S_t, every term by its size, no bootstrap: S_2 = 3; S_1 = 3.5 + 0.15 = 3.65; S_0 = 2.75 + 0.5 * (0.2 + 0.15) = 2.925
MEAN_S = (3.0 + 3.65 + 2.925) / 3


@pytest.mark.parametrize("tail, mean_g", [(None, MEAN_G_TERMINATED), (10.0, MEAN_G_TIMED_OUT)], ids=["terminated", "time-out"])
def test_soft_return_of_a_scripted_episode_is_the_hand_computation(tail, mean_g):
    bias = meow.ValueBias(1, ALPHA, GAMMA, "cpu")
    play(bias, tail=tail, **EPISODE)
    values = {name: float(value) for name, value in bias.pop().items()}
    assert values["bias/episodes"] == 1
    assert values["bias/q_value"] == pytest.approx(MEAN_Q, abs=1e-6)
    assert values["bias/soft_return"] == pytest.approx(mean_g, abs=1e-6)
    assert values["bias/normalised"] == pytest.approx((MEAN_Q - mean_g) / MEAN_S, abs=1e-6)
    assert float(bias.pop()["bias/episodes"]) == 0  # pop empties it


def test_an_episode_with_random_warm_up_actions_is_not_measured():
    bias = meow.ValueBias(1, ALPHA, GAMMA, "cpu")
    bias.act_randomly()  # the first step of the first episode was random
    play(bias, **EPISODE)
    assert float(bias.pop()["bias/episodes"]) == 0
    play(bias, **EPISODE)  # the next episode, all the policy's, is
    values = bias.pop()
    assert float(values["bias/episodes"]) == 1 and float(values["bias/soft_return"]) == pytest.approx(MEAN_G_TERMINATED, abs=1e-6)


def soft_returns(rewards, alpha_log_probs, gamma, tail):
    """G_t of one episode by its definition, a double loop."""
    T = len(rewards)
    return [sum(gamma ** (k - t) * rewards[k] for k in range(t, T)) - sum(gamma ** (k - t) * alpha_log_probs[k] for k in range(t + 1, T))
            + gamma ** (T - t) * tail for t in range(T)]


def test_vectorized_envs_with_restarts_match_the_definition_episode_by_episode():
    """Isaac semantics: the step after an episode's end restarts the env (no transition, valid = 0); a reset
    of all envs drops the episodes under way; episodes with a random action are left out."""
    gen = torch.Generator().manual_seed(0)
    steps, n, gamma, alpha = 200, 3, 0.9, 0.3
    rewards = torch.randn(steps, n, generator=gen, dtype=torch.float64)
    log_probs = torch.randn(steps, n, generator=gen, dtype=torch.float64)
    values = torch.randn(steps, n, 2, generator=gen, dtype=torch.float64)
    dones = torch.rand(steps, n, generator=gen) < 0.1
    cut = dones & (torch.rand(steps, n, generator=gen) < 0.5)
    tails = torch.randn(steps, n, generator=gen, dtype=torch.float64) * cut
    random_steps = set(range(8)) | {90}
    dones[120] = True  # every env ends at step 120 ...
    reset_at = 150  # ... and after step 150 all envs restart, as an evaluation on Isaac Gym does

    bias = meow.ValueBias(n, alpha, gamma, "cpu")
    expected, episodes = [], [dict(rows=[], whole=True) for _ in range(n)]
    prev_done = torch.zeros(n, dtype=torch.bool)
    for t in range(steps):
        if t in random_steps:
            bias.act_randomly()
        else:
            bias.act(log_probs[t], values[t].min(dim=1).values)
        valid = ~prev_done
        bias.step(rewards[t], dones[t], valid, tails[t])
        for i in range(n):
            episode = episodes[i]
            if not valid[i]:
                episodes[i] = dict(rows=[], whole=True)
                continue
            episode["rows"].append(t)
            episode["whole"] &= t not in random_steps
            if dones[t, i]:
                if episode["whole"]:
                    r = [float(rewards[k, i]) for k in episode["rows"]]
                    a = [alpha * float(log_probs[k, i]) for k in episode["rows"]]
                    q = [a_k + float(values[k, i].min()) for k, a_k in zip(episode["rows"], a)]
                    expected.append((q, soft_returns(r, a, gamma, float(tails[t, i])), soft_returns(np.abs(r), -np.abs(a), gamma, 0.0)))  # S_t: every term by its size
                episodes[i] = dict(rows=[], whole=True)
        prev_done = dones[t] | (t == reset_at)
    values = {name: float(value) for name, value in bias.pop().items()}
    q, g, s = (np.concatenate([e[j] for e in expected]) for j in range(3))
    assert values["bias/episodes"] == len(expected) >= 15
    assert values["bias/q_value"] == pytest.approx(q.mean(), abs=1e-9)
    assert values["bias/soft_return"] == pytest.approx(g.mean(), abs=1e-9)
    assert values["bias/normalised"] == pytest.approx((q.mean() - g.mean()) / s.mean(), abs=1e-9)


def test_q_is_min_over_the_columns_of_the_networks_q_at_the_action_it_sampled():
    torch.manual_seed(0)
    policy = meow.FlowPolicy(5, 3, 0.3, -0.3, -2.0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs = torch.randn(64, 5)
    with torch.no_grad():
        actions, log_prob = policy.sample(obs)
    bias = meow.ValueBias(64, 0.3, 0.99, "cpu")
    bias.act(log_prob, policy.value(obs).min(dim=1).values)
    q, _ = policy.q_and_v(obs, actions)
    assert torch.allclose(bias.q.float(), q.min(dim=1).values, atol=1e-4)


def review_series(normalised, capsys, episodes=None, state=None, steps=None):
    """The warning lines and logged values of one run whose log points (at `steps`, default 1000, 2000, ...) read `normalised`."""
    bias = meow.ValueBias(1, ALPHA, GAMMA, "cpu")
    if state is not None:
        bias.load_state_dict(state)
    logged = []
    for i, b in enumerate(normalised):
        count = 4 if episodes is None else episodes[i]
        step = 1000 * (i + 1) if steps is None else steps[i]
        logged.append(bias.review({"bias/episodes": count, "bias/q_value": 100.0 * b, "bias/soft_return": 0.0, "bias/normalised": b}, step))
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")], logged


def test_the_warning_fires_once_when_the_bias_stays_out_of_bounds(capsys):
    warnings, logged = review_series([0.5, 12.0, -15.0, 40.0, 90.0, 200.0, 3.0, 50.0, 60.0, 70.0], capsys)
    assert len(warnings) == 1, warnings
    assert "at step 4000" in warnings[0] and "mean Q 4000" in warnings[0] and "normalised bias of 40" in warnings[0]
    assert "over the last 4 episodes" in warnings[0] and "beyond +-10 at 3 log points in a row" in warnings[0]
    assert all("bias/episodes" not in values and "bias/normalised" in values for values in logged)
    # a run resumed from a checkpoint keeps its state: the streak goes on, the warning does not come again
    assert review_series([20.0], capsys, state={"streak": 2, "warned": True})[0] == []
    assert len(review_series([20.0], capsys, state={"streak": 2, "warned": False})[0]) == 1


@pytest.mark.parametrize("series", [[0.5, -0.8, 2.0, 9.9, -9.9, 1.0], [11.0, 12.0, 0.2, 11.0, 12.0, -3.0, 15.0, 20.0]],
                         ids=["healthy", "never-three-in-a-row"])
def test_no_warning_on_a_series_that_does_not_stay_out_of_bounds(series, capsys):
    warnings, _ = review_series(series, capsys)
    assert warnings == []


def test_the_rule_warns_on_the_walker2d_runs_whose_q_ran_away_and_on_no_other(capsys):
    """tests/data/walker2d_bias_normalised_amd_epyc_avx2.csv: `bias/normalised` at every log point of our Walker2d-v4
    seeds 1-5 and 7-21 at 18381d0 on the AMD EPYC without AVX-512 (`plot.py --export ... --tag bias/normalised`, its
    fourth column). Seed 5's Q ran away from 60k on and its run warned at 65k; seed 11's bias was above 5 at most
    log points from 98k and its run warned at 152k; seed 13's passed 10 at 69k and its run warned at 71k; seed 16's
    passed 10 at 74k and its run warned at 79k; the other sixteen did not warn, seed 8's among them, whose bias passed
    5 at 75k, went beyond 10 at 128k and 143k (10.1, single log points) and was back within 0.24 of 0 from 250k.
    Replayed through the rule, the series give the same."""
    with open(os.path.join(os.path.dirname(__file__), "data", "walker2d_bias_normalised_amd_epyc_avx2.csv")) as f:
        rows = list(csv.DictReader(f))
    warned = {}
    for seed in sorted({int(r["seed"]) for r in rows}):
        steps, normalised = zip(*sorted((int(r["step"]), float(r["bias/normalised"])) for r in rows if int(r["seed"]) == seed))
        warnings, _ = review_series(normalised, capsys, steps=steps)
        if warnings:
            assert len(warnings) == 1
            warned[seed] = int(warnings[0].split("at step ")[1].split(":")[0])
    assert sorted({int(r["seed"]) for r in rows}) == [1, 2, 3, 4, 5, *range(7, 22)] and warned == {5: 65000, 11: 152000, 13: 71000, 16: 79000}


def test_a_log_point_without_episodes_logs_no_bias_and_keeps_the_count(capsys):
    warnings, logged = review_series([20.0, 20.0, 0.0, 20.0], capsys, episodes=[2, 1, 0, 5])
    assert len(warnings) == 1 and "at step 4000" in warnings[0]
    assert logged[2] == {}  # the tags of a log point with no finished episode are dropped, not logged as 0


def test_the_measure_draws_no_random_numbers():
    torch.manual_seed(3)
    policy = meow.FlowPolicy(4, 2, 0.3, -0.3, -2.0)
    obs = torch.randn(5, 4)
    with torch.no_grad():
        _, log_prob = policy.sample(obs)
        value = policy.value(obs).min(dim=1).values
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    bias = meow.ValueBias(5, 0.3, 0.99, "cpu")
    for t in range(20):
        bias.act(log_prob, value)
        bias.step(torch.ones(5), torch.arange(5) == t % 5, torch.arange(5) != (t + 1) % 5, bias.tail_value(policy, obs))
    bias.review({k: float(v) for k, v in bias.pop().items()}, 20)
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


class Drift(gym.Env):
    """obs = (x, t): the action moves x, leaving [-1, 1] terminates, the time limit (25) cuts the rest."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.5, 0.5)), 0
        return np.array([self.x, self.t], dtype=np.float32), {}

    def step(self, action):
        self.x += 0.3 * float(action[0])
        self.t += 1
        return np.array([self.x, self.t], dtype=np.float32), 1.0 - self.x ** 2, abs(self.x) > 1.0, False, {}


gym.register("MeowBiasDrift-v0", entry_point=Drift, max_episode_steps=25)


class NoMeasure:
    """ValueBias taken out of the loop: no call reads or changes anything."""

    def __init__(self, *args):
        pass

    def act(self, *args, **kwargs):
        pass

    act_randomly = step = load_state_dict = act

    def tail_value(self, *args):
        return 0.0

    def pop(self):
        return {}

    def review(self, values, step):
        return values

    def state_dict(self):
        return {}


def run(script, args, tmp_path, monkeypatch, measure):
    """The final weights of a short run and its TensorBoard scalars."""
    os.makedirs(tmp_path, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(script, "ValueBias", measure)
    script.main(args)
    (run_dir,) = glob.glob("runs/*")
    acc = EventAccumulator(run_dir)
    acc.Reload()
    model = torch.load(os.path.join(run_dir, "%s.pt" % script.__name__), weights_only=False)["model"]
    return model, {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


BIAS_TAGS = ["bias/q_value", "bias/soft_return", "bias/normalised"]


@pytest.mark.parametrize("script", [meow, mig], ids=lambda m: m.__name__)
def test_a_run_takes_the_same_steps_with_the_measure_as_without(script, tmp_path, monkeypatch):
    """The same weights after a short run (terminations and bootstrapped time-outs, updates, log points),
    and the loop hands the measure what it should: random and policy steps, episode ends, time-outs' tails."""
    calls = []

    class Recorded(script.ValueBias):
        def act_randomly(self):
            calls.append("random")
            super().act_randomly()

        def act(self, log_prob, value):
            calls.append("policy")
            super().act(log_prob, value)

        def step(self, rewards, ended, valid=None, tail=None):
            ended = torch.as_tensor(ended).expand(len(self.weight))
            calls.append((ended.clone(), None if valid is None else valid.clone(), None if tail is None else tail.clone()))
            super().step(rewards, ended, valid, tail)

    if script is meow:
        args = lambda: meow.Args(env_id="MeowBiasDrift-v0", total_timesteps=400, learning_starts=100, batch_size=32, eval_frequency=10 ** 6,
                                 log_frequency=100, save_model=True, compile=False)
    else:
        args = lambda: mig.Args(env_backend="gymnasium", env_id="MeowBiasDrift-v0", num_envs=3, total_timesteps=600, batch_size=32,
                                learning_starts=20, eval_frequency=10 ** 6, eval_episodes=1, log_frequency=60, save_model=True, compile=False)
    measured, tags = run(script, args(), tmp_path / "with", monkeypatch, Recorded)
    unmeasured, untagged = run(script, args(), tmp_path / "without", monkeypatch, NoMeasure)
    assert measured.keys() == unmeasured.keys() and all(torch.equal(measured[k], unmeasured[k]) for k in measured)
    assert tags["losses/qf_loss"] == untagged["losses/qf_loss"]
    for tag in BIAS_TAGS:
        assert len(tags[tag]) >= 2 and np.isfinite(tags[tag]).all() and tag not in untagged, tag
    assert "bias/episodes" not in tags

    acting, steps = [c for c in calls if isinstance(c, str)], [c for c in calls if not isinstance(c, str)]
    warm_up = 100 if script is meow else 20
    assert acting == ["random"] * warm_up + ["policy"] * (len(steps) - warm_up)
    ended = torch.stack([c[0] for c in steps])
    if script is meow:  # one env: each ended episode is logged; a tail exactly at the time-outs (25 steps)
        assert [c[1] for c in steps] == [None] * len(steps)
        lengths = tags["charts/episodic_length"]
        assert int(ended.sum()) == len(lengths) and set(lengths) >= {25.0} and min(lengths) < 25
        tails = [c[2] is not None for c in steps if bool(c[0])]
        assert tails == [length == 25 for length in lengths]
    else:  # each step after an episode's end restarts the env; tails (nonzero) only where an episode ends
        valid = torch.stack([c[1] for c in steps])
        assert torch.equal(valid[1:], ~ended[:-1]) and valid[0].all()
        tails = torch.stack([c[2] for c in steps])
        assert (tails[~ended] == 0).all() and (tails[ended] != 0).any() and (tails[ended] == 0).any()
