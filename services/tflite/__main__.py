import sys

from services.common.modelserver.cli import main

sys.exit(main("tflite", "services.tflite.runtime:TFLiteModel"))
