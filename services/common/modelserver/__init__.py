"""One Open Inference Protocol (KServe v2 REST) server core, shared by the ONNX Runtime and TFLite
servers. Transport (app), batching, metrics and the runtime adapter interface (runtime) live apart;
a runtime package only supplies a ModelRuntime subclass (load an artifact, run a batch).

Nothing is imported here: the CLI must set OMP_NUM_THREADS before numpy and the runtime load."""
