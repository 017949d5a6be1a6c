"""Reference solutions: the test suite runs the exercises' tests against these."""
