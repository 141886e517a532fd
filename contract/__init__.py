"""The contract layer: the bottom of the tree. Everything else imports it; it imports nothing from
exporters/, services/ or loadtests/.

- datatypes: Open Inference Protocol datatype names <-> numpy <-> TensorFlow enum names.
- manifest:  the schema of model_store/<model>/manifest.json (signatures with N named inputs and
             outputs, artifacts, routes, parity certificates) and the reference arrays beside it.
- codec:     the ONE Open Inference Protocol v2 codec (JSON and binary tensors, requests and
             responses, validation against a signature with bounded size and depth) and TF Serving's
             REST :predict body.
- runtimes:  the ONE registry of runtimes (name, artifact format, protocol, settings keys, probe).
"""
