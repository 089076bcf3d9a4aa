"""Cross-layer equalization (``cle``): the pass, the layer chains it finds, the rewrites."""
