import gc
import os
import sys
import weakref

import pytest

# the scripts live at the repository root and are imported as modules by the tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# ... and by the Python subprocesses they start, which keep the caller's own PYTHONPATH (packages installed there)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

# CI's 2 cores run two test workers (pytest-xdist's -n 2), each often waiting on a training script it started: one torch
# thread per process, as the scripts' own default is when OMP_NUM_THREADS is set (more would wait on one another)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def watch_buffer_copies(monkeypatch):
    """watch(script) -> a list that the script's next run fills with (what, freed): at the first update
    after a checkpoint's replay buffer is loaded ("loaded") or a copy of the buffer is written
    ("checkpoint"), whether that copy has been freed (it must not outlive its use)."""

    def watch(script):
        copies, checked = [], []
        load, save, sample = script.ReplayBuffer.load_state_dict, script.save_checkpoint, script.ReplayBuffer.sample

        def load_and_watch(rb, state):
            load(rb, state)
            copies.append(("loaded", weakref.ref(state["data"])))

        def save_and_watch(path, state):
            save(path, state)
            if state.get("buffer") is not None:
                copies.append(("checkpoint", weakref.ref(state["buffer"]["data"])))

        def sample_and_check(rb, batch_size):
            if len(checked) < len(copies):
                gc.collect()
                checked.extend([(what, ref() is None) for what, ref in copies[len(checked):]])
            return sample(rb, batch_size)

        monkeypatch.setattr(script.ReplayBuffer, "load_state_dict", load_and_watch)
        monkeypatch.setattr(script, "save_checkpoint", save_and_watch)
        monkeypatch.setattr(script.ReplayBuffer, "sample", sample_and_check)
        return checked

    return watch
