"""EAS-compatible specs: pure data and validation, no I/O."""

from openeas.spec.errors import FieldProblem, SpecError
from openeas.spec.gateway import GatewaySpec, parse_gateway_spec, shared_gateway_spec
from openeas.spec.merge import assignments_to_patch, deep_merge
from openeas.spec.service import ServiceSpec, new_token, parse_service_spec

__all__ = [
    "FieldProblem",
    "GatewaySpec",
    "ServiceSpec",
    "SpecError",
    "assignments_to_patch",
    "deep_merge",
    "new_token",
    "parse_gateway_spec",
    "parse_service_spec",
    "shared_gateway_spec",
]
