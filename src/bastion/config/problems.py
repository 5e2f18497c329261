"""Finished configuration problems carried through pydantic validation.

A model validator that finds problems spanning several keys reports them with
`problems_error([(loc, message), ...])`: each message is final, written for people, and
placed at its own key path below the model that raised it; load.py shows it as is. This
module knows nothing of files, TOML or particular keys.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# The pydantic error type of a finished message raised with its own key path (see load.py).
PROBLEM_ERROR_TYPE = "bastion_problem"

Loc = tuple[str | int, ...]


def problems_error(problems: list[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError carrying finished messages, each at its key path below the model."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(PROBLEM_ERROR_TYPE, "{message}", {"message": message}),
            loc=loc,
            input=None,
        )
        for loc, message in problems
    ]
    return ValidationError.from_exception_data("BastionConfig", details)
