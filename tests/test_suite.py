"""CI runs the README's test command."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = re.findall(r"^python3 -m venv .*&& (python -m pytest [^\n]*)$", f.read(), flags=re.M)
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [line for line in f.read().splitlines() if line.startswith("python -m pytest")]
    assert len(readme) == 1 and ci == readme
