"""Constant folding: the ``fold-constants`` pass and the helpers only it uses (static shape
folding, evaluation on onnxruntime in batches, size limits judged before evaluating)."""
