"""The forks in ablations/: each patch applies to the current script, each fork trains on Hopper-v4 and
logs its tags, and each keeps what MEow's maths needs (the affine fork: the exact V, by quadrature)."""
import csv
import glob
import importlib.util
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import meow_continuous_action
import test_policy
from test_policy import ALPHA, midpoint_grid, randomised_policy
from test_training import DIAGNOSTICS, TAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "meow_continuous_action.py")
FORKS = ["affine", "both_evals", "one_shift", "vanilla"]
ONE_SCREEN = 80  # lines: a patch is read in one screen


def patch_path(name):
    return os.path.join(ROOT, "ablations", "%s.patch" % name)


def make_fork(name, folder, script=SCRIPT):
    """The script's ablations/NAME.patch applied to it (the repository's by default), with no fuzz (an offset
    is fine), as folder/fork_NAME.py."""
    out = os.path.join(folder, "fork_%s.py" % name)
    patch = os.path.join(os.path.dirname(script), "ablations", "%s.patch" % name)
    result = subprocess.run(["patch", "--fuzz=0", "--batch", "--reject-file=-", "-o", out, script, patch], capture_output=True, text=True)
    assert result.returncode == 0, "ablations/%s.patch no longer applies to meow_continuous_action.py: refresh it " \
        "(ablations/README.md)\n%s%s" % (name, result.stdout, result.stderr)
    return out


def load_fork(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forks")
    return {name: make_fork(name, str(folder)) for name in FORKS}


@pytest.fixture(scope="module")
def fork(forks):
    """fork(NAME): the fork imported as a module, once."""
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_fork(forks[name])
        return loaded[name]

    return get


def test_ablations_holds_the_four_forks():
    assert sorted(os.path.basename(p)[: -len(".patch")] for p in glob.glob(os.path.join(ROOT, "ablations", "*.patch"))) == FORKS


@pytest.mark.parametrize("name", FORKS)
def test_patch_applies_to_the_current_script_and_its_header_says_how(name, tmp_path):
    make_fork(name, str(tmp_path))
    with open(patch_path(name)) as f:
        text = f.read()
    assert len(text.splitlines()) <= ONE_SCREEN
    header = text[: text.index("\n--- ")]
    assert "The paper: Fig." in header
    assert "Make: patch -o fork_%s.py meow_continuous_action.py ablations/%s.patch" % (name, name) in header
    (run,) = re.findall(r"^Run:\s+python fork_%s\.py (.*)$" % name, header, flags=re.M)
    args = tyro.cli(load_fork(str(tmp_path / ("fork_%s.py" % name))).Args, args=shlex.split(run))  # the script's flags
    assert args.env_id == "HalfCheetah-v4"


def test_a_patch_that_no_longer_fits_fails(tmp_path):
    """The check bites: the script edited inside a hunk's context makes the patch fail, not apply with fuzz."""
    with open(SCRIPT) as f:
        text = f.read()
    edited = tmp_path / "script.py"
    edited.write_text(text.replace("        self.squash = TanhSquash()\n", "        self.squash = TanhSquash()  # edited\n"))
    result = subprocess.run(["patch", "--dry-run", "--fuzz=0", "--batch", "--reject-file=-", "-o", str(tmp_path / "out.py"), str(edited),
                             patch_path("vanilla")], capture_output=True, text=True)
    assert result.returncode != 0 and "FAILED" in result.stdout


def test_refresh_rewrites_a_patch_that_applies_only_with_fuzz_and_keeps_its_header(tmp_path):
    """ablations/refresh.sh on a copy: after an edit next to a hunk, the refreshed patch applies with no fuzz
    and makes the same fork; a hunk that cannot apply leaves the patch as it was and says what to do."""
    shutil.copytree(os.path.join(ROOT, "ablations"), tmp_path / "ablations")
    with open(SCRIPT) as f:
        text = f.read()
    edited = text.replace("        self.squash = TanhSquash()\n", "        self.squash = TanhSquash()  # edited\n")
    (tmp_path / "meow_continuous_action.py").write_text(edited)
    original = (tmp_path / "ablations" / "one_shift.patch").read_text()
    result = subprocess.run(["bash", "ablations/refresh.sh", "one_shift"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    refreshed = (tmp_path / "ablations" / "one_shift.patch").read_text()
    assert refreshed != original and refreshed[: refreshed.index("\n--- ")] == original[: original.index("\n--- ")]
    fork = load_fork(make_fork("one_shift", str(tmp_path), script=str(tmp_path / "meow_continuous_action.py")))
    assert fork.FlowPolicy(3, 2, ALPHA, -0.3, -5.0).q_and_v(torch.randn(4, 3), torch.zeros(4, 2))[0].shape == (4, 1)

    (tmp_path / "meow_continuous_action.py").write_text(text.replace("        shift = self.reward_shift(obs)\n", "        shift = self.reward_shift(obs) + 1.0\n"))
    result = subprocess.run(["bash", "ablations/refresh.sh", "vanilla"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "fix each fork_NAME.py by hand" in result.stderr and "refresh.sh --diff vanilla" in result.stderr
    assert (tmp_path / "ablations" / "vanilla.patch").read_text() == open(patch_path("vanilla")).read()
    assert (tmp_path / "fork_vanilla.py.rej").exists()


# ------------------------------------------------------------------ each fork trains and logs
@pytest.fixture(scope="module", params=FORKS)
def hopper_run(request, forks, tmp_path_factory):
    cwd = tmp_path_factory.mktemp(request.param)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")  # PYTHONPATH (conftest): the fork imports flow_layers
    flags = ["--env-id", "Hopper-v4", "--total-timesteps", "500", "--learning-starts", "200", "--batch-size", "64",
             "--eval-frequency", "250", "--eval-episodes", "2", "--log-frequency", "100"]
    result = subprocess.run([sys.executable, forks[request.param]] + flags, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = glob.glob(str(cwd / "runs" / ("Hopper-v4__fork_%s__1__*" % request.param)))
    acc = EventAccumulator(run_dir)
    acc.Reload()
    return request.param, acc


def test_each_fork_trains_300_updates_on_hopper_and_logs_its_tags(hopper_run):
    name, acc = hopper_run
    tags = TAGS + DIAGNOSTICS + (["eval/return_stochastic"] if name == "both_evals" else [])
    assert set(tags) <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("losses/qf_loss")] == [300, 400, 500]  # updates from step 200 on
    for tag in tags:
        assert all(np.isfinite(e.value) for e in acc.Scalars(tag)), tag
    evals = ["eval/return"] + (["eval/return_stochastic"] if name == "both_evals" else [])
    for tag in evals:
        assert [e.step for e in acc.Scalars(tag)] == [250, 500], tag


def test_the_documented_export_puts_every_fork_in_one_csv_and_one_figure(tmp_path, monkeypatch, capsys):
    """docs/ablations.md's plot.py commands, run on made-up runs of the four forks in its run layout."""
    from torch.utils.tensorboard import SummaryWriter

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import plot

    runs = tmp_path / "ablation_runs" / "runs"
    for k, name in enumerate(FORKS):
        for seed in (1, 2):
            writer = SummaryWriter(str(runs / ("HalfCheetah-v4__%s__%d__100" % (name, seed))))
            for step in (50000, 100000):
                writer.add_scalar("eval/return", 1000.0 * k + seed + step / 1000, step)
                if name == "both_evals":
                    writer.add_scalar("eval/return_stochastic", -1.0 * seed, step)
            writer.close()
    with open(os.path.join(ROOT, "docs", "ablations.md")) as f:
        commands = [shlex.split(line)[2:] for line in f.read().splitlines() if line.startswith("python benchmarks/plot.py")]
    assert len(commands) == 6
    monkeypatch.chdir(tmp_path / "ablation_runs")  # where ../ablation_runs/runs is the made-up runs
    (tmp_path / "ablation_runs" / "benchmarks" / "results").mkdir(parents=True)
    for argv in commands:
        assert plot.main([{"COMMIT": "abc1234"}.get(word, word) for word in argv]) == 0
    with open("benchmarks/results/ablations_halfcheetah_100k.csv") as f:
        rows = list(csv.reader(f))
    assert sorted({row[-1] for row in rows[1:]}) == ["affine", "both_evals", "both_evals_stochastic", "one_shift", "vanilla"]
    assert len(rows) == 1 + 5 * 2 * 2  # 5 variants, 2 seeds, 2 evaluations
    _, table = capsys.readouterr()[0].rsplit("\n| environment", 1)
    assert "| HalfCheetah-v4 | both_evals_stochastic, mean ± std | -2 ± 1 | -2 ± 1 |" in table
    assert "| HalfCheetah-v4 | affine, mean ± std | 52 ± 1 | 102 ± 1 |" in table
    assert os.listdir("docs/ablations") == ["HalfCheetah-v4_eval_return.png"]


# ------------------------------------------------------------------ vanilla and one_shift: one column
@pytest.mark.parametrize("name", ["vanilla", "one_shift"])
def test_one_column_forks_keep_q_minus_v_and_the_exact_value(fork, name):
    meow = fork(name)
    policy = randomised_policy(meow, 6, 3, scale=0.3)
    obs, actions = torch.randn(64, 6), torch.rand(64, 3) * 1.9 - 0.95
    with torch.no_grad():
        q, v = policy.q_and_v(obs, actions)
        log_prob = policy.log_prob(obs, actions)
        log_z = policy.half_log_2pi + policy.prior.log_std(obs).sum(-1)
        shift = policy.reward_shift(obs)[:, 0] if name == "one_shift" else torch.zeros(64)
    assert q.shape == v.shape == (64, 1)
    assert torch.allclose(q[:, 0] - v[:, 0], ALPHA * log_prob, atol=1e-4)
    assert torch.allclose(v[:, 0], ALPHA * (shift + log_z), atol=1e-5)
    assert torch.allclose(policy.value(obs), v, atol=1e-5)
    assert (name == "vanilla") == (not hasattr(policy, "reward_shift"))
    if name == "one_shift":
        assert shift.abs().min() > 1e-3  # a real shift, which the identities above carry


# ------------------------------------------------------------------ affine: the exact V, by quadrature
@pytest.fixture(scope="module")
def affine_on_a_grid(fork):
    """A randomised affine flow at act_dim 2 and one state: Q, the density and the couplings' log-dets on a grid."""
    meow = fork("affine")
    policy = randomised_policy(meow, 4, 2).double()
    grid, cell = midpoint_grid(150, 2)
    obs = torch.randn(1, 4, dtype=torch.float64)
    with torch.no_grad():
        q, _ = policy.q_and_v(obs.expand(len(grid), 4), grid)
        log_prob = policy.log_prob(obs.expand(len(grid), 4), grid)
        z, _ = policy.squash.inverse(grid[::7])  # every 7th point: enough to see the log-det vary
        coupling_log_det = torch.zeros(len(z), dtype=torch.float64)
        for coupling in reversed(policy.couplings):
            z, log_det = coupling.inverse(z, obs.expand(len(z), 4))
            coupling_log_det += log_det
        v = policy.value(obs)[0]
    return dict(q=q, log_prob=log_prob, coupling_log_det=coupling_log_det, v=v, cell=cell)


def test_affine_couplings_have_an_action_dependent_log_det(affine_on_a_grid):
    """Else the quadrature tests below would not see the affine part: at act_dim 2 the scale depends on the action."""
    assert affine_on_a_grid["coupling_log_det"].std() > 0.05


def test_affine_density_integrates_to_one_over_the_action_box(affine_on_a_grid):
    mass = affine_on_a_grid["log_prob"].exp().sum().item() * affine_on_a_grid["cell"]
    assert abs(mass - 1.0) < 0.02, mass


def test_affine_value_is_the_soft_value_of_q(affine_on_a_grid):
    """V = alpha * log integral exp(Q / alpha) da, by quadrature, in each of the two columns."""
    q, cell = affine_on_a_grid["q"], affine_on_a_grid["cell"]
    v_quadrature = ALPHA * torch.logsumexp(q / ALPHA + math.log(cell), dim=0)
    assert torch.allclose(affine_on_a_grid["v"], v_quadrature, atol=5e-3)


@pytest.mark.parametrize("check", [test_policy.test_q_minus_v_is_alpha_log_pi_per_column, test_policy.test_reward_shift_changes_q_and_v_but_not_the_policy,
                                   test_policy.test_update_lowers_the_loss_and_moves_the_target_by_tau], ids=lambda check: check.__name__)
def test_the_scripts_policy_tests_hold_for_the_affine_fork(fork, check):
    check(fork("affine"))


def test_affine_samples_carry_their_log_prob(fork):
    """sample() adds the couplings' forward log-dets, log_prob() their inverse ones: the same log pi."""
    policy = randomised_policy(fork("affine"), 5, 4).double()  # float64: the scales push samples near the box's edges
    obs = torch.randn(1024, 5, dtype=torch.float64)
    with torch.no_grad():
        actions, log_prob = policy.sample(obs)
        recomputed = policy.log_prob(obs, actions)
    inside = actions.abs().max(-1).values < 1 - policy.squash.clip  # log_prob() clips the rest onto the box's edge
    assert inside.float().mean() > 0.9
    assert torch.allclose(log_prob[inside], recomputed[inside], atol=1e-5)


@pytest.mark.parametrize("name", ["additive (the script)", "affine"])
def test_the_deterministic_action_is_a_pre_tanh_mode_only_for_additive_couplings(fork, name):
    """What docs/ablations.md says of the affine fork's evaluation: the prior mean pushed through additive
    couplings (volume preserved) is the mode of the pre-tanh density, where its gradient is 0; through
    affine couplings it is not a stationary point at all."""
    meow = meow_continuous_action if name.startswith("additive") else fork("affine")
    policy = randomised_policy(meow, 4, 2).double()
    obs = torch.randn(8, 4, dtype=torch.float64)
    with torch.no_grad():
        action, _ = policy.sample(obs, deterministic=True)
    z = torch.atanh(action).requires_grad_(True)
    a = torch.tanh(z)
    log_density = policy.log_prob(obs, a) + torch.log1p(-a.pow(2)).sum(-1)  # of z = atanh(a)
    (grad,) = torch.autograd.grad(log_density.sum(), z)
    if name == "affine":
        assert grad.norm(dim=-1).min() > 0.01, grad
    else:
        assert grad.norm(dim=-1).max() < 1e-8, grad
