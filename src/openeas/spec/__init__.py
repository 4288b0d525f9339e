"""EAS-compatible specs: pure data and validation, no I/O."""

from openeas.spec.errors import FieldProblem, SpecError
from openeas.spec.merge import assignments_to_patch, deep_merge
from openeas.spec.service import ServiceSpec, new_token, parse_service_spec

__all__ = [
    "FieldProblem",
    "ServiceSpec",
    "SpecError",
    "assignments_to_patch",
    "deep_merge",
    "new_token",
    "parse_service_spec",
]
