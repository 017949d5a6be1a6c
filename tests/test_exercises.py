"""The build-it exercises: their tests pass against the reference solutions and fail against the stubs."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXERCISES = sorted(p.stem[len("test_"):] for p in (ROOT / "exercises").glob("test_*.py"))


def run_exercises(*extra):
    """Counts of each outcome when pytest runs exercises/, and its output."""
    out = subprocess.run([sys.executable, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|errors)", out.stdout)}
    return counts, out.stdout


def test_every_exercise_has_a_stub_a_solution_and_tests():
    assert len(EXERCISES) == 6, EXERCISES
    for name in EXERCISES:
        assert (ROOT / "exercises" / f"{name}.py").is_file()
        assert (ROOT / "exercises" / "solutions" / f"{name}.py").is_file()


def test_exercise_tests_pass_with_the_reference_solutions():
    counts, out = run_exercises("--solutions")
    assert counts.get("passed", 0) > 0 and set(counts) == {"passed"}, out[-3000:]


def test_exercise_tests_fail_with_the_stubs():
    counts, out = run_exercises("-rf")
    assert counts.get("failed", 0) > 0 and "passed" not in counts, out[-3000:]
    failed_files = set(re.findall(r"FAILED exercises/test_(\w+)\.py::", out))
    assert failed_files == set(EXERCISES), (failed_files, out[-3000:])
