"""Lowering passes that rewrite ops a backend lacks (fold-if, unroll-loops, lower-rnn) and
their helpers (subgraph inlining, node emission, RNN cell equations)."""
