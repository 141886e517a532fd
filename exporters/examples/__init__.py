"""The bundled example models: digits MLP and CNN (trained on scikit-learn's digits, which ships with
the package) and MobileNetV2 (random initialisation, for timing only), each in PyTorch and Keras."""
