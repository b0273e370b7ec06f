"""benchmarks/trace_run.py: the comparison of two traces, and traces of a tiny real run (in-process, eager).

Nothing here depends on the CPU: the tests compare traces made on the same machine, made by hand, or committed.
"""
import copy
import csv
import io
import json
import os
import re
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import meow_continuous_action as meow  # noqa: E402
import trace_run  # noqa: E402  (benchmarks/ is not a package)


def bits(*values):
    return trace_run.float_bits(np.array(values, dtype=np.float32))


def synthetic_trace():
    """A trace as make_trace writes one: two parameters, three random steps then two policy steps (an
    episode ends after the second), an evaluation before the first update, two updates."""
    d = lambda i: "%08x" % i  # noqa: E731
    return {
        "format": trace_run.FORMAT, "settings": {"args": {"env_id": "X"}, "updates": 2}, "machine": {"cpu": "A", "torch_cpu_capability": "AVX2"},
        "probes": {"qr": [d(1), 1.0, 2.0]}, "learning_starts": 3, "params": ["w", "b"],
        "init": {"params": [[d(2), 0.5, 1.0], [d(3), 0.25, 1.0]], "target_equal": True, "rng": d(4)},
        "train_env": {"kinds": "rssssrs", "actions": d(0) + d(5) + d(6) + d(7) + d(8) + d(0) + d(9),
                      "outputs": d(10) + d(11) + d(12) + d(13) + d(14) + d(15) + d(16), "exact": [bits(0.5, -1.0), bits(1.0, 0.0)], "segments": []},
        "eval_env": {"kinds": "rsr", "actions": d(0) + d(17) + d(0), "outputs": d(18) + d(19) + d(20), "exact": [bits(0.1, 0.2)], "segments": [[0, 1], [4, 2]]},
        "first_update": {"modules": ["forward, outside modules", "policy.net.0"], "ops": [["rand", 0, d(21), 3.0, 4.0], ["addmm", 1, d(22), 5.0, 10.0]]},
        "updates": [
            {"at": 5, "rng": d(23), "batch": d(24), "loss": bits(0.75), "grads": d(25) + d(26), "grad_sketch": [1.0, 2.0], "params": d(27) + d(28),
             "param_sketch": [3.0, 4.0], "adam": d(29), "target": d(30)},
            {"at": 7, "rng": d(31), "batch": d(32), "loss": bits(0.5), "grads": d(33) + d(34), "grad_sketch": [1.0, 2.0], "params": d(35) + d(36),
             "param_sketch": [3.0, 4.0], "adam": d(37), "target": d(38)},
        ],
    }


def report(a, b):
    """The comparison's lines, each with its runs of spaces made one."""
    return "\n".join(" ".join(line.split()) for line in trace_run.compare(a, b))


def test_the_timeline_follows_the_run():
    wheres = [where for _, where, _, _ in trace_run.timeline(synthetic_trace())]
    order = lambda text: next(i for i, w in enumerate(wheres) if w.startswith(text))  # noqa: E731
    assert wheres[0] == "probe qr" and wheres[1] == "initial parameter w"
    # the evaluation env's reset at its creation comes before the training env's first reset
    assert order("evaluation env reset (event 0)") < order("training env reset (event 0)")
    # random steps 0-2, then the evaluation (after 4 training events), then the policy's step 3, then update 0
    assert order("training step 2: MuJoCo") < order("evaluation event 1: deterministic action") < order("training step 3: the policy's")
    assert order("training step 3: MuJoCo") < order("update 0: torch RNG") < order("update 0: op 0 aten.rand") < order("update 0: loss")
    assert order("update 0: target") < order("training env reset (event 5)") < order("training step 4: the policy's") < order("update 1: torch RNG")
    assert len(wheres) == len(set(wheres))


def test_identical_traces():
    text = report(synthetic_trace(), synthetic_trace())
    n = len(list(trace_run.timeline(synthetic_trace())))
    assert "identical over all %d items compared" % n in text
    assert "first difference" not in text


def test_a_difference_in_an_op_is_found_first_with_its_size():
    a, b = synthetic_trace(), synthetic_trace()
    b["first_update"]["ops"][1][2:] = ["ffffffff", 5.001, 10.0]  # the addmm, and everything after it
    b["updates"][0]["loss"], b["updates"][1]["params"] = bits(np.nextafter(np.float32(0.75), np.float32(1))), "ffffffff" * 2
    text = report(a, b)
    assert "first difference: update 0: op 1 aten.addmm in policy.net.0 by relative ~0.0001" in text
    assert "first in updates: update 0: loss by relative 7.9e-08" in text  # one float32 ulp (2^-24) of 0.75
    assert "first in init: none" in text and "first in first update ops: update 0: op 1" in text


def test_every_differing_probe_is_listed_with_its_size():
    a, b = synthetic_trace(), synthetic_trace()
    for trace in (a, b):
        trace["probes"] = {"qr": [trace_run.digest(np.ones(2)), 1.0, 2.0], "tanh": ["00000000", 3.0, 4.0], "exp": ["11111111", 5.0, 6.0]}
    b["probes"]["qr"] = ["ffffffff", 1.0002, 2.0]
    b["probes"]["exp"] = ["eeeeeeee", 5.0, 6.0]  # a different digest with the same sketch: relative ~0
    text = report(a, b)
    assert "probes that differ (2 of 3): qr by relative ~0.0001; exp by relative ~0" in text
    assert "probes that differ" not in report(a, a)
    c = copy.deepcopy(a)
    c["probes"]["tanh"][1] += 1e-15  # equal results whose sketch rounds otherwise on another machine
    assert "probes that differ" not in report(a, c)
    b["probes"] = {"atanh": ["22222222", 1.0, 1.0], "exp": b["probes"]["exp"], "qr": b["probes"]["qr"]}  # paired by name, not place
    text = report(a, b)
    assert "probes that differ (2 of 2): qr by relative ~0.0001; exp by relative ~0" in text
    assert "probes only in the first trace: tanh" in text and "probes only in the second trace: atanh" in text


def test_a_policy_action_difference_gets_its_exact_size():
    a, b = synthetic_trace(), synthetic_trace()
    b["train_env"]["exact"][1] = bits(1.0, 0.5)
    b["train_env"]["outputs"] = b["train_env"]["outputs"][:-8] + "ffffffff"
    text = report(a, b)
    assert "first difference: training step 4: the policy's sampled action by relative 0.5" in text
    assert "first in train env: training step 4: MuJoCo's observation, reward and flags" in text


def test_a_shorter_trace_and_diverging_paths():
    a, b = synthetic_trace(), synthetic_trace()
    del b["updates"][1]
    text = report(a, b)
    assert "identical over all" in text and "the first trace goes on for" in text
    c = synthetic_trace()
    c["train_env"]["kinds"] = "rsssssr"  # the episode ended one step later
    text = report(a, c)
    assert "(the runs' paths part here)" in text and "first difference: training env reset (event 5)" in text


TINY = {"args": dict(env_id="Hopper-v4", seed=3, torch_threads=1, compile=False, cuda=False, learning_starts=100, batch_size=16,
                     eval_frequency=100, eval_episodes=1, total_timesteps=1000), "updates": 3}


def tiny_trace():
    trace = trace_run.make_trace(TINY, rounding=False, log=io.StringIO())
    del trace["seconds"], trace["run_seconds"]
    return trace


@pytest.fixture(scope="module")
def tiny():
    return tiny_trace()


def test_a_tiny_run_traces_the_same_twice(tiny):
    again = tiny_trace()
    assert json.dumps(again, sort_keys=True) == json.dumps(tiny, sort_keys=True)
    assert "identical over all" in report(tiny, again)
    assert tiny["init"]["target_equal"] and len(tiny["updates"]) == 3
    # the trace is of the run: the script's first update on the script's first batch, then two more
    assert tiny["train_env"]["kinds"].count("s") == 103 and len(tiny["train_env"]["exact"]) == 3
    assert [op[0] for op in tiny["first_update"]["ops"]].count("addmm") > 10


def test_the_trace_leaves_the_run_as_it_is(tiny, tmp_path, monkeypatch):
    """A plain run of the same settings to 103 steps ends with the parameters the trace saw after update 3."""
    monkeypatch.chdir(tmp_path)
    args = dict(TINY["args"], total_timesteps=103, save_model=True)
    meow.main(meow.Args(**args))
    (path,) = [os.path.join(d, f) for d, _, files in os.walk("runs") for f in files if f.endswith(".pt")]
    state = torch.load(path, weights_only=False)["model"]
    policy = meow.FlowPolicy(11, 3, 0.25, -0.3, -5.0)
    policy.load_state_dict(state)
    assert "".join(trace_run.digest(p) for p in policy.parameters()) == tiny["updates"][-1]["params"]


def test_the_probes_run_at_the_runs_threads(monkeypatch):
    """A trace of --threads 1 made in a process whose torch uses 2 threads probes at 1 thread, as the run computes
    (the committed traces were made with OMP_NUM_THREADS=1, so their probes are at 1 thread too)."""
    seen = []
    monkeypatch.setattr(trace_run, "probes", lambda: seen.append(torch.get_num_threads()) or {})
    monkeypatch.setattr(trace_run, "run_trace", lambda *args: {})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        trace_run.make_trace(TINY, rounding=False, log=io.StringIO())
    finally:
        torch.set_num_threads(threads)
    assert seen == [1]


def test_a_one_ulp_change_of_one_parameter_is_found(tiny, monkeypatch):
    original = meow.make_update

    def nudged(policy, *args):
        weight = policy.couplings[1].shift_net.net[0].weight
        with torch.no_grad():
            weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(np.inf))
        return original(policy, *args)

    monkeypatch.setattr(meow, "make_update", nudged)
    text = report(tiny, tiny_trace())
    assert "first difference: initial parameter couplings.1.shift_net.net.0.weight by relative" in text
    assert "first in updates: none" not in text  # and it carries into the updates


def test_buffer_share(tmp_path, capsys):
    rows = torch.zeros(6, 2 + 2 + 1 + 2 + 1)
    rows[:, 2:4] = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [1.0, 0.5], [-1.0, -1.0], [0.999995, 0.2], [0.1, 0.2]])
    args = {"learning_starts": 2, "env_id": "X", "seed": 1, "compile": True}
    torch.save({"buffer": {"data": rows, "size": 6, "pos": 6}, "step": 6, "obs_dim": 2, "act_dim": 2, "args": args}, tmp_path / "checkpoint.pt")
    share = trace_run.buffer_share(str(tmp_path / "checkpoint.pt"))
    # the policy's rows 2-5 (the random actions before step 2 are left out): 3 of 8 components exactly +-1,
    # 2 of 4 transitions hold one, 4 of 8 components beyond the clamp at 1 - 1e-5
    assert share["all"] == {"steps": [2, 6], "components": 8, "exactly +-1": 3, "transitions": 4, "with a +-1 component": 2, "beyond the clamp": 4}
    assert share["windows"] == [share["all"]]
    trace_run.main(["--buffer-share", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "share.json")])
    assert "| all | 3 of 8 (37.5000%) | 2 of 4 (50.0000%) | 4 of 8 (50.0000%) |" in capsys.readouterr().out
    assert json.loads((tmp_path / "share.json").read_text())["buffers"][0]["all"] == share["all"]


def test_saturation_threshold():
    y = torch.tensor([0.9, 1.0, 0.9, 1.0, 1.0])
    assert trace_run.saturated_from(y, 1.0) == 3  # from the last point that is not 1.0 on
    assert trace_run.saturated_from(-y, -1.0) == 3 and trace_run.saturated_from(y, -1.0) == 5
    grid = trace_run.float32_range(8.0, 8.0 + 2 ** -18)
    assert list(grid) == [8.0, 8.0 + 2 ** -20, 8.0 + 2 ** -19, 8.0 + 3 * 2 ** -20, 8.0 + 2 ** -18]
    assert trace_run.describe(grid, 2) == repr(8.0 + 2 ** -19) and trace_run.describe(grid, 5).startswith("none up to")


def test_a_per_action_path_finds_the_exact_threshold(monkeypatch):
    """Paths evaluated on every 16th grid point refine their threshold on every float32 around it."""
    cut = float(trace_run.float32_range(7.0, 10.0)[1000 * 16 + 5])
    fake = lambda z: torch.where(z.abs() >= cut, z.sign(), torch.tanh(z) * 0.5)  # noqa: E731
    monkeypatch.setattr(trace_run, "tanh_paths", lambda act_dim, compiled: {"fake": (fake, 16), "fake whole": (fake, 1)})
    result = trace_run.tanh_rounding(6, False)
    assert result["fake"]["+1 from"] == result["fake"]["-1 from"] == result["fake whole"]["+1 from"] == repr(cut)
    assert result["float64 reference"]["+1 from"] == repr(float(np.float32(9.010913848876953)))


@pytest.mark.parametrize("argv,message", [
    (["--trace", "x.json"], "--trace needs --compare"),
    (["--updates", "0", "--out", "t.json"], "--updates and --threads must be >= 1"),
    (["--full-updates", "0", "--out", "t.json"], "--full-updates must be >= 1"),
    (["--compare", "missing.json"], "no trace at missing.json"),
    (["--out", "no/such/folder/t.json"], "the folder of --out"),
    (["--env-id", "Nope-v0", "--out", "t.json"], "unknown env id"),
    ([], "give --out FILE"),
])
def test_bad_input_is_one_error_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        trace_run.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: ") and message in err[-1]
    assert os.listdir(tmp_path) == []


def test_a_truncated_trace_is_one_error(tiny, tmp_path):
    whole = tmp_path / "whole.json.gz"
    trace_run.write_trace(tiny, str(whole))
    assert trace_run.read_trace(str(whole)) == tiny
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(trace_run.InputError, match="cannot read trace %s" % re.escape(str(cut))):
        trace_run.read_trace(str(cut))


def test_compare_two_trace_files(tiny, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json.gz"
    other = copy.deepcopy(tiny)
    other["updates"][2]["loss"] = bits(123.0)
    trace_run.write_trace(tiny, str(a))
    trace_run.write_trace(other, str(b))
    trace_run.main(["--compare", str(a), "--trace", str(b)])
    assert "first difference: update 2: loss by relative" in capsys.readouterr().out


def test_the_cpu_comparison_in_the_docs_is_the_committed_data():
    """docs/reproducing.md's buffer-share rows, its list of differing probes and its MKL_CBWR=COMPATIBLE claim are
    those of the files in tests/data."""
    with open(os.path.join(ROOT, "docs", "reproducing.md")) as f:
        doc = f.read()
    data = os.path.join(ROOT, "tests", "data")
    for cpu, name in (("AMD EPYC", "amd_epyc"), ("Intel Xeon", "intel_xeon")):
        with open(os.path.join(data, "walker2d_buffer_share_%s.json" % name)) as f:
            buffer = json.load(f)["buffers"][0]
        rows = [line for line in doc.splitlines() if line.startswith("| %s | " % cpu)]
        assert len(rows) == len(buffer["windows"]) + 1
        for row, w in zip(rows, buffer["windows"] + [dict(buffer["all"], steps=None)]):
            cells = [c.replace(",", "") for c in row.strip("| ").split(" | ")[1:]]
            assert cells[0] == ("all" if w["steps"] is None else "%d-%d" % tuple(w["steps"])), row
            for cell, (k, n) in zip(cells[1:], [("exactly +-1", "components"), ("with a +-1 component", "transitions"), ("beyond the clamp", "components")]):
                count, percent = cell.split(" (")
                assert count == "%d of %d" % (w[k], w[n]), (cpu, row)
                decimals = len(percent.rstrip("%)").split(".")[1])
                assert float(percent.rstrip("%)")) == round(100.0 * w[k] / w[n], decimals), (cpu, row)
    traces = {n: trace_run.read_trace(os.path.join(data, "walker2d_trace_%s.json.gz" % n))
              for n in ("amd_epyc", "intel_xeon", "amd_epyc_mkl_compatible", "intel_xeon_mkl_compatible")}
    section = doc[doc.index("### The Intel Xeon against the AMD EPYC") :]
    section = " ".join(section[: section.index("\n## ")].split())
    line = [x for x in trace_run.compare(traces["amd_epyc"], traces["intel_xeon"]) if x.startswith("probes that differ")][0]
    differing = [p.split(" by relative ")[0] for p in line.split(": ", 1)[1].split("; ")]
    sizes = [p.split(" by relative ~")[1].replace("e-0", "e-") for p in line.split(": ", 1)[1].split("; ")]  # 7e-09 as 7e-9
    assert "probes that differ (6 of 20)" in line and "6 of the 20 probes differ" in section
    for name, size in zip(differing, sizes):
        assert "`%s` (relative ~%s" % (name, size) in section or "`%s` (~%s" % (name, size) in section, (name, size)
    compatible = trace_run.compare(traces["amd_epyc_mkl_compatible"], traces["intel_xeon_mkl_compatible"])
    assert "identical over all 37048 items compared" in compatible and "equal over all 37,048 items" in section


def test_updates_beyond_full_updates_keep_the_loss_and_the_parameters(tiny, tmp_path, monkeypatch):
    """--full-updates 1 of 3: the later two updates are recorded by their loss bits and digests, which a plain run
    of the same settings ends with, and a one-ulp change made after the first update is found in them."""
    light = trace_run.make_trace(dict(TINY, full_updates=1), rounding=False, log=io.StringIO())
    assert "grads" in light["updates"][0] and [sorted(u) for u in light["updates"][1:]] == [["at", "loss", "params", "target"]] * 2
    assert [u["loss"] for u in light["updates"]] == [u["loss"] for u in tiny["updates"]]
    monkeypatch.chdir(tmp_path)
    meow.main(meow.Args(**dict(TINY["args"], total_timesteps=103, save_model=True)))
    (path,) = [os.path.join(d, f) for d, _, files in os.walk("runs") for f in files if f.endswith(".pt")]
    policy = meow.FlowPolicy(11, 3, 0.25, -0.3, -5.0)
    policy.load_state_dict(torch.load(path, weights_only=False)["model"])
    assert trace_run.digest(*policy.parameters()) == light["updates"][-1]["params"]

    original = meow.make_update

    def nudged_after_the_first(policy, *args):
        update, optimizer = original(policy, *args)
        calls = []

        def nudge(batch):
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    weight = policy.couplings[0].shift_net.net[0].weight
                    weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(np.inf))
            return update(batch)

        return nudge, optimizer

    monkeypatch.setattr(meow, "make_update", nudged_after_the_first)
    nudged = trace_run.make_trace(dict(TINY, full_updates=1), rounding=False, log=io.StringIO())
    text = report(light, nudged)
    assert "first difference: update 1: loss" in text or "first difference: update 1: all parameters" in text
    assert "first in updates: update 0" not in text


def test_the_amd_epyc_without_avx512_in_the_docs_is_the_committed_data():
    """docs/reproducing.md's AVX2 AMD EPYC: against the AVX-512 one, every probe, the init, the random steps, the first
    evaluation and the eager first-update ops agree; the traces part at the first sampled action, by the sizes given."""
    data = os.path.join(ROOT, "tests", "data")
    with open(os.path.join(ROOT, "docs", "reproducing.md")) as f:
        doc = f.read()
    section = doc[doc.index("### An AMD EPYC without AVX-512") :]
    section = " ".join(section[: section.index("\n## ")].split())
    read = lambda n: trace_run.read_trace(os.path.join(data, "walker2d_trace_%s.json.gz" % n))  # noqa: E731
    for mkl, size, said in (("", "2.1e-7", "relative 2.1e-7 with MKL's default path"), ("_mkl_compatible", "4.4e-7", "4.4e-7 with `MKL_CBWR=COMPATIBLE`")):
        a, b = read("amd_epyc" + mkl), read("amd_epyc_avx2" + mkl)
        assert (a["machine"]["torch_cpu_capability"], b["machine"]["torch_cpu_capability"]) == ("AVX512", "AVX2")
        assert a["machine"]["mkl"].split(", Lnx")[0] == b["machine"]["mkl"].split(", Lnx")[0]
        text = report(a, b)
        assert "first difference: training step 10000: the policy's sampled action by relative %s" % size.replace("e-", "e-0") in text
        for part in ("probes", "init", "eval", "first update ops"):
            assert "first in %s: none" % part in text
        assert "probes that differ" not in text and "<- differs" not in text
        assert said in section
    long = read("amd_epyc_avx2_mkl_compatible_9500")
    assert long["settings"]["updates"] == 9500 and long["settings"]["full_updates"] == 100
    assert long["machine"]["torch_cpu_capability"] == "AVX2" and long["machine"]["environment"].get("MKL_CBWR") == "COMPATIBLE"
    assert len(long["updates"]) == 9500 and "grads" in long["updates"][99] and "grads" not in long["updates"][100]
    with open(os.path.join(data, "walker2d_buffer_share_intel_xeon.json")) as f:
        at_18381d0 = json.load(f)["machine"]  # made at 18381d0
    assert at_18381d0["commit"] == "18381d0" and long["machine"]["code"] == at_18381d0["code"]
    assert "made at %s, whose `meow_continuous_action.py` and `flow_layers.py` are 18381d0's" % long["machine"]["commit"] in section


def reproducing_text():
    """docs/reproducing.md with its line breaks and indents as single spaces, as the docs' sentences read."""
    with open(os.path.join(ROOT, "docs", "reproducing.md")) as f:
        return " ".join(f.read().split())


def results_returns(name, **match):
    """{(env, seed, step): return} of a results CSV's rows whose columns take one of the given values."""
    with open(os.path.join(ROOT, "benchmarks", "results", name)) as f:
        rows = [r for r in csv.DictReader(f) if all(r[k] in v for k, v in match.items())]
    return {(r["env"], int(r["seed"]), int(r["step"])): float(r["return"]) for r in rows}


def test_our_amd_epyc_rows_were_not_made_on_the_avx2_one():
    """docs/reproducing.md: our seeds 1 and 3-6 at c43349e on the AVX2 AMD EPYC evaluate as walker2d_by_cpu.csv's
    `AMD EPYC` rows at 10k (no update yet) and otherwise at 20k, by the values the docs give."""
    def returns(name, **match):
        return {(seed, step): v for (env, seed, step), v in results_returns(name, env=["Walker2d-v4"], **match).items()}

    here = returns("c43349e_avx2_20k.csv", cpu=["AMD EPYC (AVX2)"], commit=["c43349e"])
    there = returns("walker2d_by_cpu.csv", cpu=["AMD EPYC"], variant=["ours"], commit=["3adc4c8", "c43349e"])
    doc = reproducing_text()
    seeds = (1, 3, 4, 5, 6)
    assert sorted(here) == [(s, step) for s in seeds for step in (10000, 20000)]
    for seed in seeds:
        assert here[seed, 10000] == there[seed, 10000] and here[seed, 20000] != there[seed, 20000]
    said = lambda table: ", ".join("%.1f" % table[s, 20000] for s in seeds[:-1]) + " and %.1f" % table[6, 20000]  # noqa: E731
    assert "not at 20k: %s against %s" % (said(here), said(there)) in doc


def test_our_1m_amd_epyc_runs_were_not_made_on_the_avx2_one():
    """docs/reproducing.md: Ant-v4 seeds 1-2 and Humanoid-v4 seed 1 at c43349e evaluate otherwise on the AVX2 AMD
    EPYC than mujoco_1m.csv's `AMD EPYC` rows, at every step run there, by the values the docs and README give."""
    here = results_returns("c43349e_avx2_20k.csv", env=["Ant-v4", "Humanoid-v4"], cpu=["AMD EPYC (AVX2)"])
    there = results_returns("mujoco_1m.csv", cpu=["AMD EPYC"], commit=["c43349e"])
    keys = [("Ant-v4", 1, 10000), ("Ant-v4", 1, 20000), ("Ant-v4", 2, 10000), ("Humanoid-v4", 1, 10000)]
    assert sorted(here) == keys and {(e, s) for e, s, _ in there} == {(e, s) for e, s, _ in keys}
    assert all(here[k] != there[k] for k in keys)
    doc = reproducing_text()
    a1, a1_20k, a2, h1 = ["%.1f" % here[k] for k in keys]
    b1, b1_20k, b2, g1 = ["%.1f" % there[k] for k in keys]
    assert ("%s and %s for Ant-v4 seeds 1 and 2 and %s for Humanoid-v4 seed 1, against `mujoco_1m.csv`'s %s, %s and %s; "
            "Ant-v4 seed 1 at 20k %s against %s" % (a1, a2, h1, b1, b2, g1, a1_20k, b1_20k)) in doc
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "Humanoid-v4 seed 1 at c43349e on an AVX-512 AMD EPYC" in f.read()


def test_the_authors_uncompiled_seed_1_is_one_run_on_both_amd_epycs():
    """docs/reproducing.md: the authors' seed 1 (eager, no compiled code) evaluates on the AVX2 AMD EPYC as on the
    AVX-512 one, float32 for float32, at every step both runs reached, and the docs give that range."""
    def returns(cpu):
        return results_returns("walker2d_by_cpu.csv", variant=["authors"], seed=["1"], cpu=[cpu])

    avx2, avx512 = returns("AMD EPYC (AVX2)"), returns("AMD EPYC")
    both = sorted(set(avx2) & set(avx512))
    assert len(both) >= 3 and all(avx2[k] == avx512[k] for k in both)
    doc = reproducing_text()
    assert "at each of its %d evaluations from %dk to %dk" % (len(both), both[0][2] // 1000, both[-1][2] // 1000) in doc
    assert "makes one run on both AMD EPYCs (its seed 1 to %dk, above)" % (both[-1][2] // 1000) in doc


def test_the_eager_avx2_trace_is_the_one_the_docs_describe():
    """docs/reproducing.md: the committed eager trace is an eager run of this commit's algorithm (18381d0's files) on
    an AMD EPYC without AVX-512, and the docs give the command that compares another machine with it."""
    name = "walker2d_trace_amd_epyc_avx2_eager.json.gz"
    trace = trace_run.read_trace(os.path.join(ROOT, "tests", "data", name))
    with open(os.path.join(ROOT, "tests", "data", "walker2d_buffer_share_intel_xeon.json")) as f:
        at_18381d0 = json.load(f)["machine"]  # made at 18381d0
    m = trace["machine"]
    assert trace["settings"]["args"]["compile"] is False and len(trace["updates"]) == 100
    assert m["torch_cpu_capability"] == "AVX2" and "avx512f" not in m["cpu_flags"] and m["code"] == at_18381d0["code"]
    doc = reproducing_text()
    assert "python benchmarks/trace_run.py --compare tests/data/%s" % name in doc
    assert "made at %s, whose `meow_continuous_action.py` and `flow_layers.py` are 18381d0's" % m["commit"] in doc
    compiled = trace_run.read_trace(os.path.join(ROOT, "tests", "data", "walker2d_trace_amd_epyc_avx2.json.gz"))
    report = trace_run.compare(compiled, trace)
    parted = [x for x in report if x.startswith("identical up to")]
    assert parted and "first difference: evaluation event 2: deterministic action" in parted[0]
    assert trace["eval_env"]["kinds"][:3] == "rrs"  # event 2 is the first evaluation's first step
    assert any(x.startswith("items: ") and "37126 in the second" in x for x in report) and "37,126 items" in doc
    assert "parts at the first evaluation's first deterministic action" in doc
