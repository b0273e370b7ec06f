"""Trace the first steps of a training run bit by bit, so that two machines can find where they part.

    python benchmarks/trace_run.py --out trace.json.gz       # Walker2d-v4 seed 1, the paper's defaults, 100 updates
    python benchmarks/trace_run.py --compare tests/data/walker2d_trace_amd_epyc.json.gz   # this machine against that trace
    python benchmarks/trace_run.py --compare tests/data/walker2d_trace_amd_epyc.json.gz --trace other.json.gz   # two traces, no run
    python benchmarks/trace_run.py --updates 9500 --full-updates 100 --out long.json.gz   # where two runs part within 9,500 updates
    python benchmarks/trace_run.py --buffer-share runs/RUN/checkpoint.pt --out share.json   # exact +-1 actions in a replay buffer

A trace runs meow_continuous_action.main itself, with its default command's settings (compiled as a
4M-step Walker2d run is, one torch thread) and three of its collaborators wrapped to record what
passes through them; nothing the run computes or draws changes. It stops after --updates updates. It holds:
- probes: single operations on fixed inputs (random draws, QR, orthogonal init, matmul, layer norm,
  element-wise functions, a fused Adam step), each kernel separately;
- init: every parameter after seeding and initialisation;
- the training env's events (resets, and each step's action and MuJoCo's outputs), the evaluation
  env's events (at the first evaluation, before any update) and the exact bits of every action the policy gives;
- the first update's aten operations in order, forward and backward (run once more outside the
  trajectory, eagerly, with the same batch and dropout masks; the RNG state is put back);
- each update: the RNG state, the batch, the loss bits, every gradient and parameter tensor after the
  step, Adam's moments and the target network; after the first --full-updates updates (to keep a trace of
  thousands of updates small) only the loss bits and one digest of all parameters and one of the target network.
Tensors are stored as 8 hex digits of the sha256 of their bytes; where a relative size is needed, also a
float64 sketch (the dot product with a fixed Gaussian vector) and the norm, so that a difference
between two traces gets a size: |sketch_a - sketch_b| / norm_a is about |a - b| / |a|.
The trace also measures float32 tanh near saturation (a stored action of exactly +-1 inverts to the
clamp of TanhSquash.inverse): on a grid of every float32 z in [7, 10], in each kernel path acting can take.
--compare lists the first difference in run order, then the first difference in each part, then every
probe that differs.
"""
import argparse
import contextlib
import functools
import gzip
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import meow_continuous_action as meow  # noqa: E402
from plot import this_cpu as cpu_model  # noqa: E402  (the CPU model name the results CSVs record)

FORMAT = 1
DIGITS = 8  # hex digits kept of each sha256: a changed tensor keeps its digest with probability 2^-32


class InputError(ValueError):
    """Bad input: one `error:` line, exit code 2."""


class StopTrace(Exception):
    """Raised by the traced update after the last traced update: ends meow.main."""


# ----------------------------------------------------------------------------- digests
def as_array(x):
    return np.ascontiguousarray(x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x))


def digest(*xs):
    """DIGITS hex digits of the sha256 of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for x in xs:
        a = as_array(x)
        h.update(("%s%s" % (a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:DIGITS]


_gauss = np.zeros(0)


def sketch(x):
    """(dot product with a fixed N(0, 1) vector, L2 norm), both in float64."""
    global _gauss
    a = as_array(x).astype(np.float64).ravel()
    if a.size > _gauss.size:
        _gauss = np.random.default_rng(0).standard_normal(max(a.size, 2 * _gauss.size))
    return [float(np.dot(a, _gauss[: a.size])), float(np.sqrt(np.dot(a, a)))]


def float_bits(x):
    """Hex of the bytes of a float32 array (exact)."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes().hex()


def from_bits(text):
    return np.frombuffer(bytes.fromhex(text), dtype=np.float32)


# ----------------------------------------------------------------------------- the machine
def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"})
    except OSError:
        pass
    return []


def inductor_isa(compiled):
    """The vector instructions torch.compile's C++ code uses here (finding out compiles a test program)."""
    if not compiled:
        return "not used (eager)"
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        return "unknown"
    return str(pick_vec_isa()) or "none"


@functools.lru_cache(maxsize=None)
def mkl_code_path():
    """The first line MKL_VERBOSE prints: MKL names there the instruction set it picked on this CPU."""
    code = "import torch; a = torch.ones(8, 8); torch.mm(a, a)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ, MKL_VERBOSE="1")).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [line for line in out.splitlines() if line.startswith("MKL_VERBOSE") and "GEMM" not in line]
    return lines[0][len("MKL_VERBOSE ") :] if lines else "not used"


# environment variables that choose kernels or threads (MKL's code path, ATen's CPU capability, inductor, OpenMP),
# as the process started with them (torch.compile sets some of its own later)
NUMERICS_VARIABLES = ("MKL_", "ATEN_CPU_CAPABILITY", "TORCHINDUCTOR_", "OMP_", "KMP_")
ENVIRONMENT = {k: v for k, v in sorted(os.environ.items()) if k.startswith(NUMERICS_VARIABLES)}


def machine(compiled):
    import mujoco

    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    code = {}
    for name in ("meow_continuous_action.py", "flow_layers.py"):
        with open(os.path.join(ROOT, name), "rb") as f:
            code[name] = hashlib.sha256(f.read()).hexdigest()[:DIGITS]
    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "inductor_vec_isa": inductor_isa(compiled), "mkl": mkl_code_path(), "torch": torch.__version__, "numpy": np.__version__, "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__, "python": platform.python_version(), "commit": commit, "code": code,
        "environment": ENVIRONMENT,
    }


# ----------------------------------------------------------------------------- probes: one kernel each, fixed inputs
def probes():
    """Digests and sketches of single operations on inputs that every machine builds alike."""
    out = {}

    def put(name, t):
        out[name] = [digest(t)] + sketch(t)

    torch.manual_seed(0)
    put("randn 1024 (vectorised normal)", torch.randn(1024))
    torch.manual_seed(0)
    put("randn 6 (scalar normal)", torch.randn(1, 6))
    torch.manual_seed(0)
    put("rand 512x64", torch.rand(512, 64))
    rng = np.random.default_rng(0)  # numpy's Gaussian bits are the same on every machine
    a = torch.from_numpy(rng.standard_normal((64, 64)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((64, 23)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((512, 23)).astype(np.float32))
    h = torch.from_numpy(rng.standard_normal((512, 64)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((256, 17)).astype(np.float32))
    put("qr 64x64", torch.linalg.qr(a)[0])
    put("qr 64x23", torch.linalg.qr(b)[0])
    torch.manual_seed(0)
    put("orthogonal_ 64x23", torch.nn.init.orthogonal_(torch.empty(64, 23)))
    put("linear 512x23 -> 64", F.linear(x, b, a[0]))
    put("linear 512x64 -> 64", F.linear(h, a, a[1]))
    put("linear 512x17 -> 256", F.linear(x[:, :17], w))
    put("linear 1x23 -> 64", F.linear(x[:1], b, a[0]))
    put("layer_norm 512x64", F.layer_norm(h, (64,)))
    put("sigmoid 512x64", torch.sigmoid(h))
    put("tanh 512x64", torch.tanh(h))
    put("exp 512x64", torch.exp(h))
    put("log1p 512x64", torch.log1p(h.abs()))
    put("atanh 512x64", torch.atanh(h.clamp(-0.99999, 0.99999)))
    put("softplus 512x64", F.softplus(h))
    put("sum 512x64 rows", h.sum(-1))
    put("norm 512x64", torch.linalg.vector_norm(h))
    params = torch.nn.Parameter(h.clone().reshape(-1))
    params.grad = h.reshape(-1).flip(0).clone()
    adam = meow.make_optimizer([params], 1e-3)
    for _ in range(3):
        adam.step()
    put("adam 3 steps", params)
    return out


# ----------------------------------------------------------------------------- tanh near saturation
def float32_range(lo, hi):
    """Every float32 in [lo, hi] (0 < lo < hi), ascending."""
    bits = np.arange(np.float32(lo).view(np.int32), np.float32(hi).view(np.int32) + 1, dtype=np.int32)
    return bits.view(np.float32)


PER_ACTION_STRIDE = 16  # a call per action is slow: those paths see every 16th float32, then every one near their threshold


def tanh_paths(act_dim, compiled):
    """The ways float32 tanh is computed on an action: name -> (function of a 1-D float32 tensor, grid stride)."""

    def vectorised(z):  # one large contiguous tensor, as in a batch
        return torch.tanh(z)

    def strided(z):  # every other element of a larger tensor: ATen's loop for non-contiguous inputs
        holder = torch.zeros(2 * z.numel())
        holder[::2] = z
        return torch.tanh(holder[::2])

    def per_action(fn):  # one action at a time, [1, act_dim], as acting calls it
        def run(z):
            pad = (-z.numel()) % act_dim
            rows = torch.cat([z, z[:pad]]).view(-1, 1, act_dim)
            return torch.cat([fn(row).view(-1) for row in rows])[: z.numel()]
        return run

    paths = {"vectorised": (vectorised, 1), "strided": (strided, 1), "eager [1, %d]" % act_dim: (per_action(torch.tanh), PER_ACTION_STRIDE)}
    if compiled:  # what a compiled run's acting computes (torch.compile writes its own tanh code)
        paths["compiled [1, %d]" % act_dim] = (per_action(torch.compile(lambda z: torch.tanh(z), dynamic=False)), PER_ACTION_STRIDE)
    return paths


def saturated_from(y, sign):
    """The index from which y is exactly `sign` to the end (len(y) if y[-1] is not)."""
    not_yet = np.flatnonzero((y != sign).numpy())
    return 0 if not_yet.size == 0 else int(not_yet[-1]) + 1


def tanh_rounding(act_dim, compiled):
    """For each path and sign: the smallest float32 |z| in [7, 10] from which tanh(z) is exactly +-1, how many
    grid points differ from float64 tanh rounded to float32, and a digest of the outputs."""
    grid = torch.from_numpy(float32_range(7.0, 10.0))
    result = {"float64 reference": {}}
    for sign, label in ((1.0, "+1"), (-1.0, "-1")):
        z = sign * grid
        result["float64 reference"][label + " from"] = describe(grid, saturated_from(torch.tanh(z.double()).float(), sign))
    with torch.no_grad():
        for name, (fn, stride) in tanh_paths(act_dim, compiled).items():
            entry = {"grid": "every float32" if stride == 1 else "every %dth float32" % stride}
            for sign, label in ((1.0, "+1"), (-1.0, "-1")):
                z = (sign * grid)[::stride].contiguous()
                y = fn(z)
                i = saturated_from(y, sign) * stride
                if stride > 1 and 0 < i < len(grid):  # refine: every float32 between the last unsaturated point and i
                    window = (sign * grid)[i - stride + 1 : i + 1].contiguous()
                    i = i - stride + 1 + saturated_from(fn(window), sign)
                entry[label + " from"] = describe(grid, i)
                entry[label + " differs from reference"] = "%d of %d" % (int((y != torch.tanh(z.double()).float()).sum()), len(z))
                entry[label + " digest"] = digest(y)
            result[name] = entry
    return result


def describe(grid, i):
    return repr(float(grid[i])) if i < len(grid) else "none up to %r" % float(grid[-1])


# ----------------------------------------------------------------------------- recording a run
class EnvStream:
    """The events of one env: reset (its observation) or step (its action; its observation, reward and flags)."""

    def __init__(self, learning_starts=None):
        self.kinds, self.actions, self.outputs, self.exact = [], [], [], []
        self.steps, self.learning_starts = 0, learning_starts
        self.segments = []  # [train events before it, events] for streams interleaved with the training env's

    def wrap(self, env, position):
        step, reset = env.step, env.reset

        def traced_step(action):
            result = step(action)
            obs, reward, terminated, truncated, _ = result
            self.add("s", digest(action), digest(np.asarray(obs, np.float64), np.float64(reward), np.bool_(terminated), np.bool_(truncated)), position())
            if self.learning_starts is None or self.steps >= self.learning_starts:
                self.exact.append(float_bits(action))
            self.steps += 1
            return result

        def traced_reset(**kwargs):
            obs, info = reset(**kwargs)
            self.add("r", "0" * DIGITS, digest(np.asarray(obs, np.float64)), position())
            return obs, info

        env.step, env.reset = traced_step, traced_reset  # instance attributes: the env itself is untouched
        return env

    def add(self, kind, action, output, at):
        self.kinds.append(kind)
        self.actions.append(action)
        self.outputs.append(output)
        if at is not None:
            if self.segments and self.segments[-1][0] == at:
                self.segments[-1][1] += 1
            else:
                self.segments.append([at, 1])

    def state(self):
        return {"kinds": "".join(self.kinds), "actions": "".join(self.actions), "outputs": "".join(self.outputs), "exact": self.exact, "segments": self.segments}


class OpRecorder(TorchDispatchMode):
    """Every aten operation's outputs, in order, with the innermost module it ran in (outside modules: the phase)."""

    def __init__(self, named_modules):
        super().__init__()
        self.ops, self.modules, self.stack, self.handles = [], [], [], []
        self.phase = "forward, outside modules"
        for name, module in named_modules:
            self.handles.append(module.register_forward_pre_hook(lambda m, a, name=name: self.stack.append(name)))
            self.handles.append(module.register_forward_hook(self.leave))

    def leave(self, module, inputs, output):
        self.stack.pop()  # returns nothing: a forward hook's return value would replace the output

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        module = self.stack[-1] if self.stack else self.phase
        if module not in self.modules:
            self.modules.append(module)
        for t in tree_flatten(out)[0]:
            if torch.is_tensor(t):
                self.ops.append([str(func.overloadpacket.__name__), self.modules.index(module), digest(t)] + sketch(t))
        return out

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()


class Recorder:
    """Wrappers for meow.main's collaborators that record what passes through them."""

    def __init__(self, updates, learning_starts, full_updates=None):
        self.n_updates = updates
        self.n_full = updates if full_updates is None else full_updates
        self.train = EnvStream(learning_starts)
        self.eval = EnvStream()
        self.envs = []
        self.names, self.init, self.first_update, self.updates = None, None, None, []

    def make_env(self, original):
        def make(env_id, seed, render=False):
            thunk = original(env_id, seed, render)

            def traced():
                env = thunk()
                self.envs.append(env)
                if len(self.envs) == 1:  # main builds the training env first, then the evaluation env
                    return self.train.wrap(env, lambda: None)
                return self.eval.wrap(env, lambda: len(self.train.kinds))

            return traced

        return make

    def make_update(self, original):
        def make(policy, target_policy, lr, gamma, tau, max_grad_norm, compile=False):
            update, optimizer = original(policy, target_policy, lr, gamma, tau, max_grad_norm, compile)
            self.names = [name for name, _ in policy.named_parameters()]
            self.init = {"params": [[digest(p)] + sketch(p) for p in policy.parameters()],
                         "target_equal": all(torch.equal(a, b) for a, b in zip(policy.parameters(), target_policy.parameters())),
                         "rng": digest(torch.get_rng_state())}

            def traced(batch):
                full = len(self.updates) < self.n_full
                record = {"at": len(self.train.kinds)}
                if full:
                    record.update(rng=digest(torch.get_rng_state()), batch=digest(*batch))
                    if not self.updates:
                        self.first_update = self.trace_ops(policy, target_policy, batch, gamma)
                loss = update(batch)
                params = list(policy.parameters())
                record.update(loss=float_bits(loss.detach().reshape(1)), target=digest(*target_policy.parameters()))
                if full:
                    flat = optimizer.param_groups[0]["params"][0]  # the one flat buffer the parameters are views of
                    state = optimizer.state[flat]
                    record.update(grads="".join(digest(p.grad) for p in params), grad_sketch=sketch(flat.grad),
                                  params="".join(digest(p) for p in params), param_sketch=sketch(flat),
                                  adam=digest(state["exp_avg"], state["exp_avg_sq"]))
                else:
                    record["params"] = digest(*params)
                self.updates.append(record)
                if len(self.updates) == self.n_updates:
                    raise StopTrace
                return loss

            return traced, optimizer

        return make

    @staticmethod
    def trace_ops(policy, target_policy, batch, gamma):
        """The update's forward and backward once more, eagerly, outside the trajectory: same batch, same
        dropout masks (the RNG state is put back), the gradient left for the update to zero."""
        rng = torch.get_rng_state()
        modules = [("policy." + n if n else "policy", m) for n, m in policy.named_modules()]
        modules += [("target." + n if n else "target", m) for n, m in target_policy.named_modules()]
        recorder = OpRecorder(modules)
        try:
            with recorder:
                policy.use_dropout(True)
                with policy.dropout_masks(2, batch.obs.shape[0]):
                    loss = meow.meow_loss(policy, target_policy, batch, gamma)
                policy.use_dropout(False)
                recorder.phase = "backward"
                loss.backward()
        finally:
            recorder.remove_hooks()
            policy.use_dropout(False)
            torch.set_rng_state(rng)
        return {"modules": recorder.modules, "ops": recorder.ops}


class NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass

    add_text = add_scalar

    def close(self):
        pass


@contextlib.contextmanager
def patched(module, **replacements):
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def run_trace(args, updates, log=sys.stderr, full_updates=None):
    """Run meow.main(args) until `updates` updates are done, the first `full_updates` (default: all) recorded
    in full; returns the recorded run (a dict)."""
    resolved = meow.Args(**vars(args))
    meow.resolve_defaults(resolved)
    recorder = Recorder(updates, resolved.learning_starts, full_updates)
    try:
        with patched(meow, make_env=recorder.make_env(meow.make_env), make_update=recorder.make_update(meow.make_update),
                     make_writer=lambda *a, **k: NullWriter()), contextlib.redirect_stdout(log):
            meow.main(args)
    except StopTrace:
        pass
    finally:
        for env in recorder.envs:
            env.close()
    if len(recorder.updates) < updates:
        raise InputError("the run ended after %d of the %d updates to trace" % (len(recorder.updates), updates))
    return {
        "learning_starts": resolved.learning_starts, "params": recorder.names, "init": recorder.init, "train_env": recorder.train.state(),
        "eval_env": recorder.eval.state(), "first_update": recorder.first_update, "updates": recorder.updates,
    }


def make_trace(settings, rounding=True, log=sys.stderr):
    """The trace of a run of settings["args"] (meow.Args fields) to settings["updates"] updates: the machine,
    the probes, the run, and (rounding=True) the tanh measurement."""
    start = time.time()
    args = meow.Args(**settings["args"])
    # the probes run at the run's threads, not the process's: MKL's QR of a 64x64 matrix rounds differently at 1 and 2
    torch.set_num_threads(args.torch_threads or meow.default_threads())
    trace = {"format": FORMAT, "settings": settings, "machine": machine(args.compile), "probes": probes()}
    trace.update(run_trace(args, settings["updates"], log, settings.get("full_updates")))
    trace["run_seconds"] = round(time.time() - start, 1)
    if rounding:
        act_dim = len(trace["train_env"]["exact"][0]) // 8
        trace["tanh"] = tanh_rounding(act_dim, args.compile)
    trace["seconds"] = round(time.time() - start, 1)
    return trace


# ----------------------------------------------------------------------------- comparing two traces
# Each item of a timeline: (part, where, value, size). value: a digest or exact float32 bits; size: how a
# difference gets its relative size: "bits" (value holds them), (label, (sketch, norm)), or None (digest only).
EXACT = "bits"


def chunks(text):
    return [text[i : i + DIGITS] for i in range(0, len(text), DIGITS)]


def timeline(trace):
    """The items of a trace in the order the run produced them (probes first)."""
    for name, entry in trace["probes"].items():
        yield "probes", "probe %s" % name, entry[0], ("", entry[1:])
    for name, entry in zip(trace["params"], trace["init"]["params"]):
        yield "init", "initial parameter %s" % name, entry[0], ("", entry[1:])
    yield "init", "torch RNG state after the initialisation", trace["init"]["rng"], None
    train, evaluation = trace["train_env"], trace["eval_env"]
    blocks = [(u["at"], 0, k) for k, u in enumerate(trace["updates"])]  # at equal positions an update comes before an evaluation
    first = 0
    for at, count in evaluation["segments"]:
        blocks.append((at, 1, (first, count)))
        first += count
    blocks.sort()
    b, steps, exact = 0, 0, iter(train["exact"])
    for i in range(len(train["kinds"]) + 1):
        while b < len(blocks) and blocks[b][0] <= i:
            _, kind, what = blocks[b]
            yield from update_items(trace, what) if kind == 0 else eval_items(evaluation, *what)
            b += 1
        if i == len(train["kinds"]):
            break
        action, output = train["actions"][DIGITS * i : DIGITS * (i + 1)], train["outputs"][DIGITS * i : DIGITS * (i + 1)]
        if train["kinds"][i] == "r":
            yield "train env", "training env reset (event %d): observation" % i, output, None
            continue
        if steps >= trace["learning_starts"]:
            yield "actions", "training step %d: the policy's sampled action" % steps, next(exact), EXACT
        else:
            yield "train env", "training step %d: random action" % steps, action, None
        yield "train env", "training step %d: MuJoCo's observation, reward and flags" % steps, output, None
        steps += 1


def eval_items(evaluation, first, count):
    exact = iter(evaluation["exact"][evaluation["kinds"][:first].count("s") :])
    for i in range(first, first + count):
        output = evaluation["outputs"][DIGITS * i : DIGITS * (i + 1)]
        if evaluation["kinds"][i] == "r":
            yield "eval", "evaluation env reset (event %d): observation" % i, output, None
        else:
            yield "eval", "evaluation event %d: deterministic action" % i, next(exact), EXACT
            yield "eval", "evaluation event %d: MuJoCo's observation, reward and flags" % i, output, None


def update_items(trace, k):
    u, names, where = trace["updates"][k], trace["params"], "update %d" % k
    if "grads" not in u:  # beyond --full-updates
        yield "updates", "%s: loss" % where, u["loss"], EXACT
        yield "updates", "%s: all parameters" % where, u["params"], None
        yield "updates", "%s: target network" % where, u["target"], None
        return
    yield "updates", "%s: torch RNG state before it" % where, u["rng"], None
    yield "updates", "%s: the batch" % where, u["batch"], None
    if k == 0:
        modules = trace["first_update"]["modules"]
        for i, (op, module, value, s, n) in enumerate(trace["first_update"]["ops"]):
            yield "first update ops", "%s: op %d aten.%s in %s" % (where, i, op, modules[module]), value, ("", (s, n))
    yield "updates", "%s: loss" % where, u["loss"], EXACT
    for name, value in zip(names, chunks(u["grads"])):
        yield "updates", "%s: gradient (after the clip) of %s" % (where, name), value, (" (all gradients)", u["grad_sketch"])
    yield "updates", "%s: Adam's moments" % where, u["adam"], None
    for name, value in zip(names, chunks(u["params"])):
        yield "updates", "%s: parameter %s" % (where, name), value, (" (all parameters)", u["param_sketch"])
    yield "updates", "%s: target network" % where, u["target"], None


def difference(value_a, value_b, size_a, size_b):
    """' by relative W' for two differing items, or '' where only digests are stored."""
    if size_a is None:
        return ""
    if size_a == EXACT:
        x, y = from_bits(value_a).astype(np.float64), from_bits(value_b).astype(np.float64)
        if x.shape != y.shape:
            return " (different sizes)"
        return " by relative %.2g (largest |a - b| / largest |a|)" % (np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
    label, (s_a, n_a) = size_a
    return " by relative ~%.2g%s" % (abs(s_a - size_b[1][0]) / max(n_a, 1e-30), label)


PARTS = ("probes", "init", "train env", "eval", "actions", "first update ops", "updates")


def compare(a, b):
    """Lines that say where traces a and b first differ, in run order and in each part, then every probe that differs."""
    lines = ["machines (first | second):"]
    for key in sorted(set(a["machine"]) | set(b["machine"])):
        if a["machine"].get(key) != b["machine"].get(key) or key in ("cpu", "torch_cpu_capability"):
            lines.append("  %-22s %s | %s" % (key, a["machine"].get(key), b["machine"].get(key)))
    if a["settings"] != b["settings"]:
        lines.append("warning: the traces have different settings: %s | %s" % (a["settings"], b["settings"]))
    items_a, items_b = list(timeline(a)), list(timeline(b))
    first, same, per_part, compared = None, 0, {}, 0
    for (part, where, value_a, size_a), (_, where_b, value_b, size_b) in zip(items_a, items_b):
        if where != where_b:  # the runs took different paths: later items do not pair up
            per_part.setdefault(part, "%s | %s (the runs' paths part here)" % (where, where_b))
            first = first or per_part[part]
            break
        compared += 1
        if value_a != value_b:
            found = where + difference(value_a, value_b, size_a, size_b)
            per_part.setdefault(part, found)
            first = first or found
        elif first is None:
            same += 1
    lines.append("items: %d in the first trace, %d in the second, %d compared" % (len(items_a), len(items_b), compared))
    if first is None:
        lines.append("identical over all %d items compared" % compared)
        if len(items_a) != len(items_b):
            lines.append("the %s trace goes on for %d more items" % ("first" if len(items_a) > len(items_b) else "second", abs(len(items_a) - len(items_b))))
    else:
        lines.append("identical up to item %d; first difference: %s" % (same, first))
        lines.extend("  first in %-17s %s" % (part + ":", per_part.get(part, "none")) for part in PARTS)
    return lines + probe_lines(a["probes"], b["probes"]) + tanh_lines(a.get("tanh"), b.get("tanh"))


def probe_lines(a, b):
    """Every probe that differs, by name: each runs one kernel on fixed inputs, so unlike a run's items, a
    probe's difference is not inherited from an earlier item. Its digest decides; the float64 sketch that sizes a
    difference is itself computed on each machine, and may round otherwise where the results are equal."""
    differing = ["%s%s" % (name, difference(a[name][0], b[name][0], ("", a[name][1:]), ("", b[name][1:])))
                 for name in a if name in b and a[name][0] != b[name][0]]
    lines = ["probes that differ (%d of %d): %s" % (len(differing), len(set(a) & set(b)), "; ".join(differing))] if differing else []
    only = [("first", sorted(set(a) - set(b))), ("second", sorted(set(b) - set(a)))]
    return lines + ["probes only in the %s trace: %s" % (which, ", ".join(names)) for which, names in only if names]


def tanh_lines(a, b=None):
    """The tanh measurement of one trace, or of two side by side."""
    if not a or (b is not None and not b):
        return []
    lines = ["float32 tanh on every float32 |z| in [7, 10]%s:" % ("" if b is None else " (first | second)")]
    for path, entry in a.items():
        for key, value in entry.items():
            name = "%s %s" % (path, key)
            if b is None:
                lines.append("  %-42s %s" % (name, value))
            else:
                other = b.get(path, {}).get(key)
                lines.append("  %-42s %s | %s%s" % (name, value, other, "" if value == other else "   <- differs"))
    return lines


# ----------------------------------------------------------------------------- replay buffers
def buffer_share(path):
    """Counts of the policy's stored action components that are exactly +-1 in float32, and that lie beyond the
    clamp of TanhSquash.inverse (|a| > 1 - clip), per 20k steps of a checkpoint's replay buffer and in all."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError("cannot read %s: %s" % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if not isinstance(ckpt, dict) or not ckpt.get("buffer") or "obs_dim" not in ckpt:
        raise InputError("%s holds no replay buffer (a checkpoint.pt written with --save-buffer)" % path)
    data, size, pos = ckpt["buffer"]["data"], ckpt["buffer"]["size"], ckpt["buffer"]["pos"]
    if size == len(data) and pos and size < ckpt["step"]:
        data = torch.cat([data[pos:], data[:pos]])  # a full ring: oldest first
    first_step, start = ckpt["step"] - size, ckpt["args"]["learning_starts"]
    actions = data[:, ckpt["obs_dim"] : ckpt["obs_dim"] + ckpt["act_dim"]]
    exact = actions.abs() == 1.0
    beyond = actions.abs() > torch.tensor(1.0 - meow.TanhSquash().clip, dtype=torch.float32)

    def counts(lo, hi):
        rows = slice(lo - first_step, hi - first_step)
        return {"steps": [lo, hi], "components": exact[rows].numel(), "exactly +-1": int(exact[rows].sum()), "transitions": len(exact[rows]),
                "with a +-1 component": int(exact[rows].any(1).sum()), "beyond the clamp": int(beyond[rows].sum())}

    lo = max(first_step, start)
    windows = [counts(w, min(w + 20_000, ckpt["step"])) for w in range(lo, ckpt["step"], 20_000)]
    run = {k: ckpt["args"][k] for k in ("env_id", "seed", "compile", "learning_starts")}
    return {"checkpoint": os.path.abspath(path), "run": run, "step": ckpt["step"], "windows": windows, "all": counts(lo, ckpt["step"])}


def buffer_lines(share):
    run = share["run"]
    lines = ["%s: %s seed %s (%s), %d steps, the policy's actions from step %d" % (share["checkpoint"], run["env_id"], run["seed"],
             "compiled" if run["compile"] else "eager", share["step"], run["learning_starts"]),
             "| steps | components exactly +-1 | transitions with a +-1 component | components beyond the clamp (|a| > 1 - 1e-5) |",
             "|---|---|---|---|"]
    for w in share["windows"] + [dict(share["all"], steps=["all", ""])]:
        pct = lambda k, n: "%d of %d (%.4f%%)" % (w[k], w[n], 100.0 * w[k] / max(w[n], 1))  # noqa: E731
        lines.append("| %s | %s | %s | %s |" % ("-".join(str(x) for x in w["steps"] if x != ""), pct("exactly +-1", "components"),
                                                pct("with a +-1 component", "transitions"), pct("beyond the clamp", "components")))
    return lines


# ----------------------------------------------------------------------------- command line
def read_trace(path):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            trace = json.load(f)
    except (OSError, ValueError, EOFError) as e:  # EOFError: a truncated .gz
        raise InputError("cannot read trace %s: %s" % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if not isinstance(trace, dict) or trace.get("format") != FORMAT or "settings" not in trace:
        raise InputError("%s is not a trace of this version (format %d)" % (path, FORMAT))
    return trace


def write_trace(trace, path):
    tmp = path + ".tmp"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(tmp, "wt") as f:
        json.dump(trace, f, separators=(",", ":"))
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="Walker2d-v4", help="the task (default: Walker2d-v4)")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default: 1)")
    parser.add_argument("--updates", type=int, default=100, help="updates to trace (default: 100)")
    parser.add_argument("--full-updates", type=int,
                        help="record only the first this many updates in full, the rest by their loss and two digests (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as run_seeds.py gives each run (default: 1)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile as the training script does in a long run (default); --no-compile: eager")
    parser.add_argument("--out", help="write the trace here (.json, or .json.gz compressed)")
    parser.add_argument("--compare", metavar="FILE", help="compare against this trace: a new trace of this machine with its settings, or --trace")
    parser.add_argument("--trace", metavar="FILE", help="with --compare: the second trace, instead of a new run")
    parser.add_argument("--buffer-share", nargs="+", metavar="CHECKPOINT",
                        help="print the shares of exact +-1 actions in these checkpoints' replay buffers (and with --out write them, with the machine, as JSON)")
    args = parser.parse_args(argv)
    try:
        if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise InputError("the folder of --out %s does not exist" % args.out)
        if args.buffer_share:
            shares = [buffer_share(path) for path in args.buffer_share]
            print("\n".join(line for share in shares for line in buffer_lines(share)))
            if args.out:
                write_trace({"format": FORMAT, "machine": machine(False), "buffers": shares}, args.out)
            return
        check_cli(args)
        reference = read_trace(args.compare) if args.compare else None
        if args.trace:
            trace = read_trace(args.trace)
        else:
            settings = reference["settings"] if reference else {"args": dict(env_id=args.env_id, seed=args.seed, torch_threads=args.threads, compile=args.compile, cuda=False), "updates": args.updates}
            if not reference and args.full_updates is not None and args.full_updates < args.updates:
                settings["full_updates"] = args.full_updates
            if settings["args"]["env_id"] not in gym.registry:
                raise InputError("unknown env id %r" % settings["args"]["env_id"])
            print("tracing %s (%d updates) on %s" % (settings["args"], settings["updates"], cpu_model()), file=sys.stderr)
            trace = make_trace(settings)
            print("traced in %.0f s (the run to its last traced update: %.0f s)" % (trace["seconds"], trace["run_seconds"]), file=sys.stderr)
    except InputError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
    if args.out:
        write_trace(trace, args.out)
        print("trace written to %s (%d bytes)" % (args.out, os.path.getsize(args.out)))
    if reference is not None:
        print("\n".join(compare(reference, trace)))
    else:
        print("\n".join(tanh_lines(trace.get("tanh"))))


def check_cli(args):
    if args.trace and not args.compare:
        raise InputError("--trace needs --compare (the trace to compare it with)")
    if not args.out and not args.compare:
        raise InputError("give --out FILE (write a trace), --compare FILE (compare with one) or --buffer-share CHECKPOINT")
    if args.updates < 1 or args.threads < 1:
        raise InputError("--updates and --threads must be >= 1")
    if args.full_updates is not None and args.full_updates < 1:
        raise InputError("--full-updates must be >= 1")
    for path in (args.compare, args.trace):
        if path and not os.path.isfile(path):
            raise InputError("no trace at %s" % path)


if __name__ == "__main__":
    main()
