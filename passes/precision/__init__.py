"""Mixed precision: the convert-fp16 pass and its fp16 overflow report."""
