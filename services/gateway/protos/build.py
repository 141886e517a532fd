"""python -m services.gateway.protos.build [--check]: write tfserving.binpb from the installed
tensorflow-serving-api and tensorflow (dev time; the gateway itself never imports them)."""

from __future__ import annotations

import argparse
import importlib
import sys

from google.protobuf import descriptor_pb2

from services.gateway.protos import API_FILES, DESCRIPTOR_SET, WELL_KNOWN


def _module(proto: str) -> str:
    return proto.removesuffix(".proto").replace("/", ".") + "_pb2"


def descriptor_set() -> bytes:
    """The FileDescriptorSet of API_FILES and their transitive dependencies, each file after its
    dependencies, in a deterministic order."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def visit(file: object) -> None:
        if file.name in seen or file.name.startswith(WELL_KNOWN):  # type: ignore[attr-defined]
            return
        seen.add(file.name)  # type: ignore[attr-defined]
        for dep in file.dependencies:  # type: ignore[attr-defined]
            visit(dep)
        out.file.add().ParseFromString(file.serialized_pb)  # type: ignore[attr-defined]

    for proto in API_FILES:
        visit(importlib.import_module(_module(proto)).DESCRIPTOR)
    return out.SerializeToString(deterministic=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.gateway.protos.build", description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = p.parse_args(argv)
    data = descriptor_set()
    if args.check:
        same = DESCRIPTOR_SET.exists() and DESCRIPTOR_SET.read_bytes() == data
        print(f"{DESCRIPTOR_SET}: {'up to date' if same else 'differs'}")
        raise SystemExit(0 if same else 1)
    DESCRIPTOR_SET.write_bytes(data)
    print(f"wrote {DESCRIPTOR_SET} ({len(data)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
