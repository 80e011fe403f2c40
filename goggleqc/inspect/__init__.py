"""The analyses: pure, vectorised functions on arrays. No file I/O, no printing."""
