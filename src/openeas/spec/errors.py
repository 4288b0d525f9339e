"""Spec errors that name the offending field and say what to do."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldProblem:
    field: str  # dotted path, e.g. "metadata.rpc.keepalive" or "containers[0].port"
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class SpecError(ValueError):
    """Raised for a spec that cannot be accepted. `problems` names each field and why."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @classmethod
    def one(cls, field: str, problem: str) -> SpecError:
        return cls([FieldProblem(field, problem)])

    def to_json(self) -> dict[str, object]:
        return {
            "code": "InvalidSpec",
            "message": "the spec is not valid: " + str(self),
            "problems": [{"field": p.field, "problem": p.problem} for p in self.problems],
        }


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def from_validation_error(exc: ValidationError) -> SpecError:
    problems = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling against the EAS service spec"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = str(err.get("msg", "invalid value"))
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            msg += f" (got {err.get('input')!r})" if kind != "model_type" else ""
        problems.append(FieldProblem(_dotted(loc), msg))
    return SpecError(problems)
