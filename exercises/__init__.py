"""Build-it exercises: stubs to fill in, and the tests that check them (see README.md)."""
