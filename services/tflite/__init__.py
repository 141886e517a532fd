"""TFLite model server: the shared OIP v2 core over the LiteRT (ai-edge-litert) Interpreter."""
