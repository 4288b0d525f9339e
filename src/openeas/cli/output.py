"""What every `openeas` client command shares: options, the -s/-D patch, JSON and text output,
user errors."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from openeas.cli.client import ApiClient, CliError, locate_server
from openeas.spec import SpecError, assignments_to_patch

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="the server's data dir (default: $OPENEAS_DATA_DIR or ~/.openeas)",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
Wait = Annotated[bool, typer.Option("--wait", help="wait until it is Running (exit 1 if it fails)")]
Timeout = Annotated[float, typer.Option("--timeout", help="seconds --wait waits at most")]
# `modify` of services, gateways and groups: -s PATCH.json and/or -D key=value
PatchFile = Annotated[
    Path | None, typer.Option("-s", "--spec", help="JSON with the part to change (deep-merged)")
]
Assignments = Annotated[
    list[str] | None,
    typer.Option("-D", help="key=value, e.g. -D metadata.instance=2 (repeatable)", show_default=False),
]


@dataclass(frozen=True)
class Patch:
    """What a modify asks for: the -s file's JSON object and the -D assignments."""

    spec: dict[str, Any] | None
    assignments: list[str]
    defined: dict[str, Any]  # the assignments as a patch (the server parses them again)

    def body(self) -> dict[str, Any]:
        """The API's modify body: {"spec": ...} and/or {"assignments": [...]}."""
        body: dict[str, Any] = {}
        if self.spec is not None:
            body["spec"] = self.spec
        if self.assignments:
            body["assignments"] = self.assignments
        return body


def read_patch(spec_file: Path | None, define: list[str] | None) -> Patch:
    """Check -s/-D before anything is sent (a typo fails here, with the flag named)."""
    if spec_file is None and not define:
        raise CliError("nothing to change: give -s PATCH.json and/or -D key=value")
    spec = read_json_file(spec_file, "spec file") if spec_file is not None else None
    if spec is not None and not isinstance(spec, dict):
        raise CliError(f"spec file {spec_file} must hold a JSON object")
    try:
        defined = assignments_to_patch(define or [])
    except SpecError as exc:
        raise CliError(f"-D {exc}") from None
    return Patch(spec, list(define or []), defined)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


@contextlib.contextmanager
def user_errors(json_out: bool = False) -> Iterator[None]:
    """Turn CliError into one message on stderr (and the server's JSON error with --json), exit 1."""
    try:
        yield
    except CliError as exc:
        if json_out:
            payload = exc.payload if isinstance(exc.payload, dict) else {"message": str(exc)}
            emit_json({"error": payload})
        fail(str(exc))
        raise typer.Exit(1) from None


def pairs(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = str(value if value is not None else "-")
        indent = "\n" + " " * (width + 4)
        print(f"  {key.ljust(width)}  {text.replace(chr(10), indent)}")


def print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200))  # piped: do not fold the endpoints
    console.print(table)


def client_for(data_dir: Path | None) -> ApiClient:
    return ApiClient(locate_server(data_dir))


def read_json_file(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(f"cannot read {what} {path}: no such file") from None
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
