"""AOTInductor model server: the shared OIP v2 server core over PyTorch 2 `.pt2` packages."""
