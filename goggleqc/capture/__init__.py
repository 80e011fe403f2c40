"""Frame sources and image files: everything that reads pixels from the outside world."""
