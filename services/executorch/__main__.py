import sys

from services.common.modelserver.cli import main

sys.exit(main("executorch", "services.executorch.runtime:ExecuTorchModel"))
