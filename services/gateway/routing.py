"""Naming scheme and routing policy.

Every (model, runtime) pair whose artifact passed its parity check is addressable as
`<model>@<runtime>` (e.g. digits-cnn-torch@onnxruntime), and every quantized variant whose
certificate passed as `<model>@<runtime>:<variant>` (e.g. digits-cnn-torch@tflite:int8-static;
its server knows it as `<model>:<variant>`). A bare `<model>` routes by policy, to float artifacts
only (a variant never stands in for the float model):
- "default":  the configured default runtime (or, if that artifact is not routable, the first
              routable runtime in gateway_runtimes order);
- "failover": the same candidates in the same order, but runtimes whose circuit is open go last,
              and the gateway tries the next candidate when a backend cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from contract.manifest import VARIANT_SEP, Artifact, Manifest, served_name
from contract.runtimes import FORMAT_OF_RUNTIME
from services.gateway.errors import NotFound
from services.gateway.settings import RUNTIMES

SEP = "@"


@dataclass(frozen=True, slots=True)
class Target:
    # For a variant, the manifest under the name its server knows ("<model>:<variant>"): the
    # backends, limits and metrics then address it like any model.
    model: Manifest
    runtime: str
    artifact: Artifact

    @property
    def name(self) -> str:
        variant = self.artifact.variant
        base = self.model.name.removesuffix(f"{VARIANT_SEP}{variant}") if variant else self.model.name
        return f"{base}{SEP}{self.runtime}" + (f"{VARIANT_SEP}{variant}" if variant else "")

    @property
    def version(self) -> str:
        return str(self.artifact.version)


class Router:
    def __init__(
        self,
        store: dict[str, Manifest],
        runtimes: list[str],
        policy: str,
        default_runtime: str,
        available: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.policy = policy
        self.order = [default_runtime] + [r for r in runtimes if r != default_runtime]
        self.available = available
        self.targets: dict[str, Target] = {}
        for m in store.values():
            for rt in self.order:
                if m.passed(FORMAT_OF_RUNTIME[rt]):
                    t = Target(m, rt, m.artifacts[FORMAT_OF_RUNTIME[rt]])
                    self.targets[t.name] = t
                for variant, art in m.variants(FORMAT_OF_RUNTIME[rt]).items():
                    if art is not None and art.parity.ok:
                        t = Target(m.model_copy(update={"name": served_name(m.name, variant)}), rt, art)
                        self.targets[t.name] = t
        self._static: dict[tuple[str, str | None], list[Target]] = {}

    def candidates(self, model: Manifest) -> list[Target]:
        """Routable targets of a model in policy order (default runtime first)."""
        return [t for rt in self.order if (t := self.targets.get(f"{model.name}{SEP}{rt}"))]

    def resolve(self, name: str, version: str | None = None) -> list[Target]:
        """Targets to try, in order: one for `<model>@<runtime>` or the "default" policy,
        all candidates (available first) for a bare name under "failover"."""
        found = self._static.get((name, version))
        if found is None:
            found = self._resolve(name, version)
            self._static[(name, version)] = found  # only names that resolved get cached
        if len(found) > 1:
            return sorted(found, key=lambda t: not self.available(t.runtime))  # stable
        return found

    def _resolve(self, name: str, version: str | None) -> list[Target]:
        model_name, sep, runtime = name.partition(SEP)
        runtime, _, variant = runtime.partition(VARIANT_SEP)
        model = self.store.get(model_name)
        if model is None:
            known = ", ".join(self.store) or "none"
            raise NotFound(f"unknown model {model_name!r}; models: {known}")
        if sep:
            if runtime not in RUNTIMES:
                raise NotFound(
                    f"unknown runtime {runtime!r} in {name!r}; runtimes: {', '.join(RUNTIMES)}"
                )
            if runtime not in self.order:
                raise NotFound(f"runtime {runtime} is not configured in this gateway")
            if name not in self.targets:
                raise NotFound(self.why_not_variant(model, runtime, variant) if variant else self.why_not(model, runtime))
            found = [self.targets[name]]
        else:
            found = self.candidates(model)
            if not found:
                why = "; ".join(self.why_not(model, rt) for rt in self.order)
                raise NotFound(f"model {model_name} has no artifact that passed its parity check "
                               f"on a configured runtime ({why})")
        if version is not None:
            found = [t for t in found if t.version == version]
            if not found:
                raise NotFound(f"{name} has no version {version!r}")
        return found if self.policy == "failover" else found[:1]

    def why_not(self, model: Manifest, runtime: str) -> str:
        fmt = FORMAT_OF_RUNTIME[runtime]
        art = model.artifacts.get(fmt)
        if art is None:
            failed = model.failed.get(fmt)
            why = f": the export failed ({failed.error})" if failed else ""
            return f"{model.name} has no {fmt} artifact for {runtime}{why}"
        detail = art.parity.error or f"max abs error {art.parity.max_abs_error}"
        return (f"{model.name}{SEP}{runtime} is not routable: its {fmt} artifact failed parity "
                f"({detail})")

    def why_not_variant(self, model: Manifest, runtime: str, variant: str) -> str:
        fmt = FORMAT_OF_RUNTIME[runtime]
        known = model.variants(fmt)
        target = f"{model.name}{SEP}{runtime}{VARIANT_SEP}{variant}"
        if variant not in known:
            routable = [f"{model.name}{SEP}{runtime}{VARIANT_SEP}{v}" for v in model.certified_variants(fmt)]
            return (f"unknown variant {variant!r} in {target!r}; variants of {model.name} on {runtime}: "
                    f"{', '.join(routable) or 'none'} (exporters: python -m exporters quantize)")  # fmt: skip
        art = known[variant]
        if art is None:
            return f"{target} has no artifact: {model.failed[f'{fmt}{VARIANT_SEP}{variant}'].error}"
        return f"{target} is not routable: its certificate failed ({art.parity.error})"

    def variant_targets(self, model: Manifest) -> list[Target]:
        """The routable quantized variants of a model (never candidates of its bare name)."""
        prefix = f"{model.name}{SEP}"
        return [t for n, t in self.targets.items() if n.startswith(prefix) and t.artifact.variant]

    def pairs(self) -> Iterator[tuple[Manifest, str, Target | None]]:
        """Every (model, configured runtime) pair, with its target if routable."""
        for m in self.store.values():
            for rt in self.order:
                yield m, rt, self.targets.get(f"{m.name}{SEP}{rt}")
