"""python -m deploy render | validate | plan: the Kubernetes / KServe manifests (`make k8s`) and
the capacity plan (deploy/kubernetes/CAPACITY.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from deploy.capacity import main as plan
from deploy.render import OUT, Source, write
from services.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("plan", help="Replicas and resources for a request rate within a latency target, "
            "from a bench's results.json.")(plan)


def _source(store: Path | None, namespace: str) -> Source:
    return Source.load(store or get_settings().model_store, namespace)


@app.command()
def render(
    store: Path = typer.Option(None, help="model store (default: services/stack.env's)"),
    namespace: str = typer.Option("servebench", help="the namespace every object goes to"),
    out: Path = typer.Option(OUT, help="where the kustomize tree is written"),
):
    """Render every manifest from services/stack.env, compose.yaml and the store."""
    src = _source(store, namespace)
    files = write(src, out)
    if not src.store:
        typer.echo(f"note: no model in {store or get_settings().model_store}: kserve/ has no "
                   "InferenceService (run `make export` first)", err=True)
    typer.echo(f"rendered {len(files)} files into {out} ({len(src.store)} models)")


@app.command()
def validate(
    store: Path = typer.Option(None, help="model store the tree was rendered from"),
    namespace: str = typer.Option("servebench"),
    out: Path = typer.Option(OUT),
    checkov: bool = typer.Option(True, help="run checkov's Kubernetes checks too"),
):
    """Build every overlay with kustomize and validate it: Kubernetes and KServe schemas, our
    rules, checkov."""
    from deploy.validate import EXPLAINED, K8S_VERSION, validate_tree

    reports = validate_tree(_source(store, namespace), out, checkov=checkov)
    typer.echo(f"Kubernetes {K8S_VERSION} schemas (kubernetes-validate, strict), KServe v0.20.0 "
               "CRDs, our rules" + (", checkov" if checkov else ""))
    for r in reports:
        typer.echo(f"  {r.name:24s} {r.objects:3d} objects  "
                   + ("ok" if r.ok else f"{len(r.errors)} problem(s)"))
        for e in r.errors:
            typer.echo(f"      {e}")
    explained = sorted({cid for r in reports for cid in r.explained})
    if explained:
        typer.echo("checkov findings accepted on purpose:")
        for cid in explained:
            typer.echo(f"  {cid}: {EXPLAINED[cid]}")
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


if __name__ == "__main__":
    app()
