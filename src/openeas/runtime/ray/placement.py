"""What an instance asks of a Ray node, and whether any node in the cluster can give it.

`metadata.cpu` -> `num_cpus`, `metadata.memory` (MB) -> `memory` (bytes), `metadata.gpu` ->
`num_gpus`, `metadata.resource` -> a custom resource of that name, which an operator gives a node
when it joins (`ray start --resources '{"NAME": 1}'`). The custom resource is asked for in a
tiny amount (CUSTOM_SHARE) so it works as a label: any number of instances fit on a node that has
it, none on a node that does not.

A spec without `metadata.cpu` asks for DEFAULT_CPU: a little, not zero, so a node started with
`--num-cpus 0` (the usual head node) never runs instances.

Ray itself would leave an actor that no node can host pending for ever (with a warning in the
driver's log); `unplaceable_reason` checks the nodes' totals first so the reconciler can say
why the service waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openeas.spec import ServiceSpec

DEFAULT_CPU = 0.01
CUSTOM_SHARE = 0.001
MB = 1024 * 1024


@dataclass(frozen=True)
class Needs:
    """One instance's demand, in Ray's terms, and the words to show for each part."""

    num_cpus: float
    num_gpus: float
    memory: int  # bytes, 0: not asked
    resource: str | None  # custom resource name

    def ray_options(self) -> dict[str, object]:
        options: dict[str, object] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.resource:
            options["resources"] = {self.resource: CUSTOM_SHARE}
        return options

    def parts(self) -> list[tuple[str, str, float]]:
        """(words, Ray resource name, amount) for every resource asked for."""
        out = [(f"cpu: {_num(self.num_cpus)}", "CPU", self.num_cpus)]
        if self.num_gpus:
            out.append((f"gpu: {_num(self.num_gpus)}", "GPU", self.num_gpus))
        if self.memory:
            out.append((f"memory: {self.memory // MB} MB", "memory", float(self.memory)))
        if self.resource:
            out.append((f"resource: {self.resource}", self.resource, CUSTOM_SHARE))
        return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def needs_of(spec: ServiceSpec) -> Needs:
    meta = spec.metadata
    return Needs(
        num_cpus=float(meta.cpu) if meta.cpu else DEFAULT_CPU,
        num_gpus=float(meta.gpu or 0),
        memory=int(meta.memory) * MB if meta.memory else 0,
        resource=meta.resource or None,
    )


def unplaceable_reason(needs: Needs, node_totals: Iterable[Mapping[str, float]]) -> str | None:
    """None when some node's total resources cover `needs`; else what is missing, in words.

    "needs gpu: 1; no node has it" when one part is missing everywhere; "needs cpu: 8, gpu: 1
    on one node; no node has all of them" when each part exists but never together."""
    nodes = list(node_totals)
    parts = needs.parts()
    if any(all(node.get(name, 0.0) >= amount for _, name, amount in parts) for node in nodes):
        return None
    if not nodes:
        return "needs a Ray node to run on; no node has joined the cluster"
    missing = [words for words, name, amount in parts if not any(n.get(name, 0.0) >= amount for n in nodes)]
    if len(missing) == 1:
        return f"needs {missing[0]}; no node has it"
    if missing:
        return f"needs {', '.join(missing)}; no node has them"
    return f"needs {', '.join(words for words, _, _ in parts)} on one node; no node has all of them"
