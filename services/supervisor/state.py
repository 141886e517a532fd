"""The run directory (.run/ by default): service list, state file, logs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.settings import REPO_ROOT

DEFAULT_RUN_DIR = REPO_ROOT / ".run"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None) -> RunDir:
        return cls(Path(path or os.environ.get("STACK_RUN_DIR") or DEFAULT_RUN_DIR).resolve())

    @property
    def specs(self) -> Path:
        return self.root / "services.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def daemon_log(self) -> Path:
        return self.logs / "supervisor.log"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_state(self, state: dict) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state)  # readers never see a half-written file
