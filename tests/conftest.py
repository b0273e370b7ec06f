import os
import sys

# the scripts live at the repository root and are imported as modules by the tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# ... and by the Python subprocesses they start, which keep the caller's own PYTHONPATH (packages installed there)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

# CI's 2 cores run one test process and, often, a training script it started: one torch thread each,
# as the scripts' own default does when OMP_NUM_THREADS is set (two threads each would wait on one another)
os.environ.setdefault("OMP_NUM_THREADS", "1")
