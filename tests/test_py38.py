"""The files an Isaac Gym machine runs must stay valid Python 3.8 (Isaac Gym Preview 4 needs 3.6-3.8)."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY38_FILES = ["flow_layers.py", "meow_continuous_action.py", "meow_isaacgym.py"]
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}  # subscriptable only from 3.9


def annotations(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            yield node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            yield from (a.annotation for a in args if a is not None and a.annotation is not None)
            if node.returns is not None:
                yield node.returns


@pytest.mark.parametrize("name", PY38_FILES)
def test_parses_with_python_3_8_grammar(name):
    with open(os.path.join(ROOT, name)) as f:
        source = f.read()
    tree = ast.parse(source, filename=name, feature_version=(3, 8))
    # annotations are evaluated at runtime (dataclasses, tyro): no `X | Y` and no `list[int]`
    for annotation in annotations(tree):
        for node in ast.walk(annotation):
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)), "%s:%d uses X | Y" % (name, node.lineno)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                assert node.value.id not in BUILTIN_GENERICS, "%s:%d subscripts %s" % (name, node.lineno, node.value.id)


def test_the_check_catches_3_10_syntax():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))
