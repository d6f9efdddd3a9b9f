"""lr_lambda expressions: a learning-rate factor from arithmetic in `epoch`, parsed and evaluated, never run.

Limits keep a hostile or mistaken text cheap and its failures messages: at most MAX_LENGTH characters, expressions
nested at most MAX_DEPTH deep, and every error of parsing or evaluating it a ValueError that says what is wrong.
"""

from __future__ import annotations

import ast
import math
import operator
from functools import lru_cache
from typing import Any

MAX_LENGTH = 500  # the thesis's texts have at most 60 characters
MAX_DEPTH = 30  # operations nested in one another; the thesis's texts nest at most 5
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {"min": min, "max": max, "pow": pow}
_ARGUMENTS = {"pow": (2, 2), "min": (2, 100), "max": (2, 100)}  # (fewest, most) arguments of each function
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load, *_BINARY, *_UNARY)


def shorten(text: str, length: int = 80) -> str:
    """The repr of a text, cut to about length characters (a long expression in a message)."""
    return repr(text) if len(text) <= length else f"{text[:length]!r}... ({len(text):,} characters)"


class LrLambda:
    """A learning-rate factor from an arithmetic expression in `epoch` (numbers, + - * / // % **, min, max, pow).

    The thesis's Python source form ``lambda epoch: <expression>`` is accepted too; it is parsed, never run.
    """

    def __init__(self, expression: str):
        self.expression = expression  # the only state, so scheduler state_dicts stay plain
        _parsed(expression)

    def __call__(self, epoch: int) -> float:
        try:
            value = _evaluate(_parsed(self.expression), float(epoch))
        except (ArithmeticError, TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"cannot be evaluated at epoch {epoch}: {type(error).__name__}: {error}") from None
        if not isinstance(value, float) or not math.isfinite(value):
            raise ValueError(f"gives {value!r} at epoch {epoch}, not a finite number")
        return value


@lru_cache(maxsize=64)
def _parsed(expression: str) -> ast.expr:
    """The checked expression: the whole text, or the body of ``lambda epoch: ...``."""
    if not isinstance(expression, str):
        raise ValueError(f"{expression!r} is not a text")
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"{len(expression):,} characters; an lr_lambda has at most {MAX_LENGTH}")
    try:
        body = ast.parse(expression.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise ValueError(f"not an arithmetic expression: {getattr(error, 'msg', type(error).__name__)}") from None
    if isinstance(body, ast.Lambda):
        body = _lambda_body(body)
    _check_depth(body)
    for node in ast.walk(body):
        _check_node(node)
    return body


def _lambda_body(node: ast.Lambda) -> ast.expr:
    arguments = node.args
    names = [argument.arg for argument in arguments.posonlyargs + arguments.args]
    if names != ["epoch"] or arguments.vararg or arguments.kwarg or arguments.kwonlyargs or arguments.defaults:
        raise ValueError("a lambda must take exactly one argument, epoch: 'lambda epoch: 0.955 ** epoch'")
    return node.body


def _check_depth(body: ast.expr) -> None:
    """At most MAX_DEPTH operations nested in one another (walked without recursion)."""
    pending = [(body, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} deep")
        pending += [(child, depth + 1) for child in ast.iter_child_nodes(node)]


def _check_node(node: ast.AST) -> None:
    if not isinstance(node, _ALLOWED):
        raise ValueError(f"{type(node).__name__} is not allowed (use numbers, epoch, + - * / // % **, min, max, pow)")
    if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, (int, float))):
        raise ValueError(f"constant {node.value!r} is not a number")
    if isinstance(node, ast.Name) and node.id not in ("epoch", *_FUNCTIONS):
        raise ValueError(f"unknown name {node.id!r}; the only variable is epoch")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
            raise ValueError("only min(...), max(...) and pow(x, y) with positional arguments can be called")
        fewest, most = _ARGUMENTS[node.func.id]
        if not fewest <= len(node.args) <= most:
            raise ValueError(f"{node.func.id}(...) takes {fewest}{'' if fewest == most else f' to {most}'} "
                             "arguments")


def _evaluate(node: ast.AST, epoch: float) -> Any:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return epoch
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, epoch))
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, epoch), _evaluate(node.right, epoch))
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg, epoch) for arg in node.args))
    raise ValueError(f"{type(node).__name__} is not allowed")
