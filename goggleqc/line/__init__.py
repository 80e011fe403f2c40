"""The line station: trigger on a lens placed in the fixture, inspect it once, show and record the verdict."""
