"""The docs stay true: every `python SCRIPT.py ...` command in README.md and docs/*.md is accepted by that
script's own argument parser (nothing is run), every `plot.py` command that reads a committed results CSV
runs on it, and every image and relative link points at a file.

Commands are taken from fenced code blocks, indented code lines and inline code spans. A shell line is
split at `&&`, `||`, `;`, `|` and `&`, continuation backslashes are joined, `# comments` and redirections
are dropped; only segments that start with `python SCRIPT.py` (after `VAR=value` prefixes) are checked,
so `pip ...`, `python -m pytest ...` and the like are skipped. The parsers:
  - scripts with a tyro `Args` dataclass (the two training scripts, the examples): tyro.cli(Args, args=argv);
  - scripts with a `parse_args(argv)` function (run_seeds.py, tune.py): that function, then the part after
    `--` with the training script's own Args (what the tool passes it, with its own flags);
  - other argparse scripts: their main(), stopped right after ArgumentParser.parse_args returns.
Placeholders such as RUNS_DIR or PATH are fine wherever the flag takes a string. A command that names a
fork of ablations/ (fork_NAME.py, not in the repository) is checked against the fork made from its patch.
"""
import argparse
import contextlib
import glob
import importlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PYTHON_SCRIPT = re.compile(r"\bpython3?\s+[\w./-]+\.py\b")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_WORDS = {"do", "then", "else", "time", "nohup", "exec", "command"}


# ----------------------------------------------------------------------------- finding the commands
def shell_segments(line):
    """Token lists of the simple commands of one shell line (comments and redirections dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&;|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    segments, current = [], []
    for token in lexer:
        if token.startswith("#"):
            break
        if token and set(token) <= set("&;|"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = []
    for tokens in segments:
        while tokens and (tokens[0] in SHELL_WORDS or ENV_ASSIGNMENT.match(tokens[0])):
            tokens = tokens[1:]
        for i, token in enumerate(tokens):
            if re.match(r"^\d*[<>]", token):  # a redirection ends the arguments
                tokens = tokens[:i]
                break
        commands.append(tokens)
    return commands


def code_lines(path):
    """(line number, text) of every piece of a Markdown file that may hold a shell command."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    found, prose = [], []
    fence, pending, pending_start = None, "", None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is None and re.match(r"^\s*(```|~~~)", line):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
                continue
        elif pending_start is None and (not line.startswith(("    ", "\t")) or "`" in line or not PYTHON_SCRIPT.search(line)):
            prose.append((number, line))
            continue
        # a code line: join backslash continuations
        if pending_start is None:
            pending_start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        found.append((pending_start, pending + stripped))
        pending, pending_start = "", None
    # inline code spans, which may wrap onto the next line
    text = "\n".join(line for _, line in prose)
    numbers = [number for number, _ in prose]
    for match in re.finditer(r"(`+)(.+?)\1", text, flags=re.S):
        span = match.group(2).replace("\n", " ").strip()
        if PYTHON_SCRIPT.search(span):
            found.append((numbers[text.count("\n", 0, match.start())], span))
    return found


def documented_commands():
    commands = []
    for path in DOCS:
        name = os.path.relpath(path, ROOT)
        for number, line in code_lines(path):
            if not PYTHON_SCRIPT.search(line):
                continue
            try:
                segments = shell_segments(line)
            except ValueError as e:  # e.g. an unbalanced quote: reported by the test
                commands.append(pytest.param(None, [line, str(e)], id="%s:%d" % (name, number)))
                continue
            index = 0
            for tokens in segments:
                if len(tokens) >= 2 and tokens[0] in ("python", "python3") and tokens[1].endswith(".py"):
                    index += 1
                    suffix = "" if index == 1 else "-%d" % index
                    commands.append(pytest.param(tokens[1], tokens[2:], id="%s:%d%s" % (name, number, suffix)))
    return commands


COMMANDS = documented_commands()


# ----------------------------------------------------------------------------- parsing them
class Parsed(Exception):
    """Raised by the patched ArgumentParser.parse_args once the script's parser has accepted its argv."""


_modules = {}
FORK = re.compile(r"fork_\w+\.py")


@pytest.fixture(scope="session")
def fork_folder(tmp_path_factory):
    """Every fork of ablations/, made from its patch as ablations/README.md says (the docs run them)."""
    folder = tmp_path_factory.mktemp("forks")
    for patch in glob.glob(os.path.join(ROOT, "ablations", "*.patch")):
        fork = folder / ("fork_%s.py" % os.path.basename(patch)[: -len(".patch")])
        subprocess.run(["patch", "--batch", "--silent", "--reject-file=-", "-o", str(fork), os.path.join(ROOT, "meow_continuous_action.py"), patch], check=True)
    return folder


def load_script(script):
    """Import a script by its path relative to the repository root (its main() is not run); a fork of
    ablations/ (fork_NAME.py) from the current directory, where fork_folder made it from its patch."""
    path = os.path.abspath(script) if FORK.fullmatch(script) else os.path.normpath(os.path.join(ROOT, script))
    if not os.path.isfile(path):
        raise AssertionError("%s does not exist" % script)
    if path not in _modules:
        folder = os.path.dirname(path)
        for entry in (ROOT, folder):  # as when the script runs: its folder, and the root for its imports
            if entry not in sys.path:
                sys.path.insert(0, entry)
        module = importlib.import_module(os.path.splitext(os.path.basename(path))[0])
        if os.path.normpath(module.__file__) != path:
            raise AssertionError("%s: importing it found %s instead" % (script, module.__file__))
        _modules[path] = module
    return _modules[path]


def is_help(argv):
    return "-h" in argv or "--help" in argv


@contextlib.contextmanager
def parser_run(what, argv):
    """Turn a parser's exit into a test failure that names the command; --help may exit 0."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            yield
    except SystemExit as e:
        if e.code in (0, None) and is_help(argv):
            return
        message = [line for line in err.getvalue().splitlines() if line.strip(" │╭╮╰╯─")]
        pytest.fail("%s rejects %s (exit %s):\n%s" % (what, " ".join(argv), e.code, "\n".join(message[-12:])))


def parse_with_tyro(module, argv, what):
    import tyro

    with parser_run(what, argv):
        tyro.cli(module.Args, args=argv)


def check_command(script, argv):
    module = load_script(script)
    if hasattr(module, "Args") and hasattr(module, "tyro"):
        parse_with_tyro(module, argv, script)
    elif callable(getattr(module, "parse_args", None)):
        with parser_run(script, argv):
            args = module.parse_args(argv)
        if is_help(argv):
            return
        passthrough = list(getattr(args, "passthrough", []))
        trainer = load_script(os.path.relpath(args.script, ROOT))
        if hasattr(args, "envs"):  # run_seeds.py: SCRIPT --env-id ENV --seed SEED <after -->
            own = [args.env_flag, args.envs[0], "--seed", str(args.seeds[0])]
        else:  # tune.py: SCRIPT --env-id ENV --seed SEED <after --> (and the sampled values)
            own = ["--env-id", args.env_id, "--seed", str(args.seed)]
        parse_with_tyro(trainer, own + passthrough, "%s (after --)" % os.path.basename(args.script))
    elif callable(getattr(module, "main", None)):
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self, args=None, namespace=None):
            raise Parsed(original(self, args, namespace))

        argparse.ArgumentParser.parse_args = parse_then_stop
        saved_argv = sys.argv
        sys.argv = [script] + list(argv)
        try:
            with parser_run(script, argv):
                try:
                    module.main(argv) if module.main.__code__.co_argcount else module.main()
                except Parsed:
                    return
            if not is_help(argv):
                pytest.fail("%s: its main() returned without calling ArgumentParser.parse_args" % script)
        finally:
            argparse.ArgumentParser.parse_args = original
            sys.argv = saved_argv
    else:
        pytest.fail("%s has no argument parser this test knows (tyro Args, parse_args(argv) or an argparse main)" % script)


@pytest.mark.parametrize("script,argv", COMMANDS)
def test_documented_command_is_accepted_by_its_scripts_parser(script, argv, request, monkeypatch):
    if script is None:
        pytest.fail("cannot split %r into shell words: %s" % tuple(argv))
    if any(FORK.search(word) for word in [script] + argv):  # a fork, or a tool given one: run where the forks are
        monkeypatch.chdir(request.getfixturevalue("fork_folder"))
    check_command(script, argv)


def table_commands():
    """The documented plot.py commands that read a committed results CSV (no --export): they are run."""
    found = []
    for param in COMMANDS:
        script, argv = param.values
        if script == "benchmarks/plot.py" and "--export" not in argv and "--csv" in argv:
            if os.path.isfile(os.path.join(ROOT, argv[argv.index("--csv") + 1])):
                found.append(pytest.param(argv, id=param.id))
    return found


@pytest.mark.parametrize("argv", table_commands())
def test_documented_table_command_runs_on_the_committed_csv(argv, tmp_path, monkeypatch, capsys):
    """A parser accepts a command that the CSV it names then refuses (e.g. a seed run on two CPUs
    without --by-cpu): such a command is run here, its figures drawn into a scratch folder."""
    plot = load_script("benchmarks/plot.py")
    monkeypatch.chdir(ROOT)
    argv = list(argv)
    if "--out-dir" in argv:
        argv[argv.index("--out-dir") + 1] = str(tmp_path)
    try:
        code = plot.main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 0, capsys.readouterr().err


def test_the_docs_hold_commands_to_check():
    files = {param.id.split(":")[0] for param in COMMANDS}
    assert "README.md" in files and len(COMMANDS) >= 5, sorted(files)
    assert len(table_commands()) >= 5


SPLIT_CITATION = re.compile(
    r"`python\s+benchmarks/split_test\.py ([^`]+)`\s+prints\s+(\d+\.\d+)(?:\s+and,\s+adjusted,\s+(\d+\.\d+))?")


def test_the_cited_split_p_values_are_what_the_script_prints(capsys):
    """The docs quote split_test.py's p (and its adjusted p) after the command: the script prints them."""
    split_test = load_script("benchmarks/split_test.py")
    cited = [m for path in DOCS for m in SPLIT_CITATION.finditer(open(path, encoding="utf-8").read())]
    assert cited
    for match in cited:
        assert split_test.main(shlex.split(match.group(1))) == 0
        printed = re.findall(r"p = (\d+\.\d+)", capsys.readouterr().out)
        assert printed == [g for g in match.groups()[1:] if g is not None], match.group(0)


def test_a_renamed_flag_fails():
    """The check bites: a flag the parser does not know, in any kind of script, is an error."""
    with pytest.raises(pytest.fail.Exception, match="--env-idd"):
        check_command("meow_continuous_action.py", ["--env-idd", "Hopper-v4"])
    with pytest.raises(pytest.fail.Exception, match="--seedz"):
        check_command("benchmarks/run_seeds.py", ["--envs", "Hopper-v4", "--", "--seedz", "3"])
    with pytest.raises(pytest.fail.Exception):
        check_command("benchmarks/plot.py", ["--out-dirr", "docs"])


def test_shell_lines_split_into_commands():
    line = "OMP_NUM_THREADS=1 python a.py --x runs/<run>/c.pt > log.txt && pip install y; python b.py -- --z 1 # note"
    assert shell_segments(line) == [["python", "a.py", "--x", "runs/<run>/c.pt"], ["pip", "install", "y"], ["python", "b.py", "--", "--z", "1"]]


# ----------------------------------------------------------------------------- links and images
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)


def relative_links(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)  # links inside code blocks are code
    for target in LINK.findall(text) + IMG_SRC.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL, mailto:, or an anchor in the same page
        yield target.split("#")[0]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_linked_file_and_image_exists(path):
    missing = [t for t in relative_links(path) if not os.path.exists(os.path.join(os.path.dirname(path), t))]
    assert not missing, "%s links to missing files: %s" % (os.path.relpath(path, ROOT), missing)


# ----------------------------------------------------------------------------- line numbers in the notes
IMPLEMENTATION = os.path.join(ROOT, "docs", "implementation.md")


def definitions(path):
    """{name: [(first line, last line)]} of every function and class, also as Class.method."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    spans = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    spans.setdefault("%s.%s" % (node.name, item.name), []).append((item.lineno, item.end_lineno))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            spans.setdefault(node.name, []).append((node.lineno, node.end_lineno))
    return spans


def test_the_equation_table_gives_the_lines_of_the_functions_it_names():
    with open(IMPLEMENTATION, encoding="utf-8") as f:
        rows = [line for line in f.read().split("\n") if re.match(r"^\| E\d", line)]
    assert len(rows) == 7
    scripts = {3: "meow_continuous_action.py", 4: "meow_isaacgym.py"}
    for row in rows:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))]  # "\|" is a pipe inside a cell
        names = re.findall(r"`([\w.]+)`", re.sub(r"\(.*?\)", "", cells[2]))
        for column, script in scripts.items():
            spans = definitions(os.path.join(ROOT, script))
            ranges = [(int(a), int(b)) for a, b in re.findall(r"(\d+)-(\d+)", cells[column])]
            assert [spans[name][0] for name in names] == ranges, (cells[0], script)
            with open(os.path.join(ROOT, script), encoding="utf-8") as f:
                lines = f.read().split("\n")
            for single in re.findall(r"\(line (\d+)\)", cells[column]):
                assert "lerp_" in lines[int(single) - 1], (cells[0], script)


@pytest.mark.parametrize(
    "pattern, script, text",
    [
        (r"`(ConditionalGaussianScale|AdditiveCoupling|TanhSquash|RewardShift|MLP|Dropout)` \((?:the prior, lines\s+)?(\d+)-(\d+)\)", "flow_layers.py", None),
        (r"`(step_and_store)` \(lines\s+(\d+)-(\d+)\)", "meow_isaacgym.py", None),
        (r"`(RunningMeanStd)` \(lines\s+(\d+)-(\d+)\)", "meow_isaacgym.py", None),
        (r"the `rb.add`\s+line (\d+)", "meow_continuous_action.py", "rb.add("),
        (r"next\s+states \(lines (\d+)-(\d+)\)", "meow_isaacgym.py", "obs_rms.update(batch.next_obs)"),
    ],
)
def test_the_notes_line_numbers_point_at_what_they_name(pattern, script, text):
    with open(IMPLEMENTATION, encoding="utf-8") as f:
        notes = f.read()
    matches = re.findall(pattern, notes)
    assert matches, pattern
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        lines = f.read().split("\n")
    spans = definitions(os.path.join(ROOT, script))
    for match in matches:
        if text is None:
            name, first, last = match
            assert spans[name] == [(int(first), int(last))], name
        else:
            numbers = [int(n) for n in ((match,) if isinstance(match, str) else match)]
            assert text in "\n".join(lines[numbers[0] - 1 : numbers[-1]]), (pattern, numbers)


def test_the_notes_cite_both_copies_of_shared_code_by_their_lines():
    """`name` (A-B / C-D): the lines of `name` in meow_continuous_action.py, then in meow_isaacgym.py."""
    with open(IMPLEMENTATION, encoding="utf-8") as f:
        matches = re.findall(r"`([\w.]+)`\s+\((\d+)-(\d+)\s+/\s+(\d+)-(\d+)\)", f.read())
    assert {m[0] for m in matches} >= {"flatten_parameters", "maybe_compile", "FlowPolicy.dropout_masks", "ValueBias"}
    spans = [definitions(os.path.join(ROOT, script)) for script in ("meow_continuous_action.py", "meow_isaacgym.py")]
    for name, *lines in matches:
        assert [spans[0][name], spans[1][name]] == [[(int(lines[0]), int(lines[1]))], [(int(lines[2]), int(lines[3]))]], name
