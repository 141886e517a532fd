import sys

from services.common.modelserver.cli import main

sys.exit(main("aotinductor", "services.aotinductor.runtime:AOTInductorModel"))
