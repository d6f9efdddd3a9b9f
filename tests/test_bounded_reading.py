"""Hostile or mistaken texts cost little and end in messages: lr_lambda expressions, YAML files (configs, study files,
run folders' config.yml), JSON and CSV run records, and names printed in tables."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from models.lr_lambda import MAX_DEPTH, MAX_LENGTH, LrLambda
from models.optimization import optimization_problems
from utils.config import Config

ROOT = Path(__file__).resolve().parents[1]


def lr_lambda_problems(text: str, epochs: int = 10) -> list[str]:
    return optimization_problems(Config(lr_scheduler="LambdaLR", lr_scheduler_params={"lr_lambda": text},
                                        num_epochs=epochs))


LR_LAMBDA_CASES = {
    "min of one value": ("min(epoch)", "min(...) takes 2 to 100 arguments"),
    "5,000 unary minus signs": ("-" * 5000 + "1", f"5,001 characters; an lr_lambda has at most {MAX_LENGTH}"),
    "a 1.8 MB expression": ("1+" * 900_000 + "1", "1,800,001 characters"),
    "deep nesting": ("-" * 400 + "1", f"nested more than {MAX_DEPTH} deep"),
    "overflow": ("epoch ** 1e308", "cannot be evaluated at epoch 2: OverflowError"),
    "division by zero": ("1 / (epoch - 3)", "cannot be evaluated at epoch 3: ZeroDivisionError"),
    "a complex number": ("(-1) ** 0.5", "not a finite number"),
}


@pytest.mark.parametrize("case", LR_LAMBDA_CASES)
def test_every_lr_lambda_error_is_a_message(case):
    """Before: TypeError, RecursionError tracebacks, and 187 s of --check for the 1.8 MB expression."""
    text, message = LR_LAMBDA_CASES[case]
    (problem,) = lr_lambda_problems(text)
    assert problem.startswith("lr_scheduler_params.lr_lambda: ") and message in problem
    assert len(problem) < 300  # the expression is shortened in the message


def test_the_thesis_forms_still_evaluate():
    assert lr_lambda_problems("lambda epoch: 0.1 ** (epoch // 30)") == []
    assert LrLambda("max(0.1, 0.975 ** epoch) * (1 + 0 % 3) - -0.0")(1000) == 0.1
    with pytest.raises(ValueError, match="cannot be evaluated at epoch 3"):
        LrLambda("1 / (epoch - 3)")(3)  # while training too: a message, not a ZeroDivisionError
