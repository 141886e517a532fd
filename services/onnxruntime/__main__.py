import sys

from services.common.modelserver.cli import main

sys.exit(main("onnxruntime", "services.onnxruntime.runtime:OnnxModel"))
