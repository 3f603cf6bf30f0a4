"""The errors that mean "bad input", reported to the user as one line and exit status 1."""

from __future__ import annotations

from rlaif.core.constitution import ConstitutionError
from rlaif.core.prompts import DatasetError
from rlaif.engines.base import PromptTooLongError
from rlaif.engines.models import ModelNotFoundError


class ClusterUnreachableError(RuntimeError):
    """`cluster.address` names a Ray cluster that cannot be joined."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ConstitutionError,
    DatasetError,
    PromptTooLongError,
    ModelNotFoundError,
    ClusterUnreachableError,
    ValueError,
)
