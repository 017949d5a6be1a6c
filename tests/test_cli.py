"""The command line: train, compare and plan run end to end; bad input exits 2 with a clear message."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import minigrad as mg
from minigrad.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_tiny_configuration_learns(capsys):
    code, out, _ = _run(capsys, "train", "--samples", "60", "--depth", "2", "--width", "32", "--epochs", "60",
                        "--batch", "32", "--lr", "0.01", "--quiet", "--device", "cpu")
    assert code == 0
    acc = float(re.search(r"training accuracy (\d\.\d+)", out).group(1))
    held = float(re.search(r"held-out accuracy (\d\.\d+) \(36 points\)", out).group(1))
    assert acc >= 0.9 and held >= 0.8
    assert "peak activation memory" in out and "FLOPs per step" in out and "60 epochs" in out


@pytest.mark.parametrize("strategy", ["sqrt", "recursive", "revolve:2", "budget:200kB"])
def test_train_with_checkpointing_gives_the_same_accuracy(capsys, strategy):
    args = ["train", "--samples", "40", "--depth", "4", "--width", "16", "--epochs", "5", "--quiet",
            "--device", "cpu"]
    _, plain, _ = _run(capsys, *args)
    _, ckpt, _ = _run(capsys, *args, "--checkpoint", strategy)
    pick = lambda text: re.search(r"accuracy (\S+) .*accuracy (\S+) .*\| loss (\S+)", text).groups()  # noqa: E731
    assert pick(plain) == pick(ckpt)          # the same training, bit for bit
    assert f"checkpoint {strategy.split(':')[0]}" in ckpt


def test_train_writes_a_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "run.png"
    code, out, _ = _run(capsys, "train", "--samples", "20", "--epochs", "2", "--quiet", "--plot", str(path))
    assert code == 0 and path.stat().st_size > 1000 and f"wrote {path}" in out


def test_compare_prints_one_row_per_strategy(capsys):
    code, out, _ = _run(capsys, "compare", "--depth", "8", "--width", "16", "--batch", "8", "--repeats", "3",
                        "--budget", "40kB", "--quiet")
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[2:7]]
    assert rows[:3] == ["none", "sqrt", "recursive"] and rows[3].startswith("revolve:")
    assert rows[4] == "budget:0.040MB"
    none_row = out.splitlines()[2].split()
    assert none_row[1] == "8" and none_row[-2:] == ["1.00x", "(1.00-1.00)"]
    assert "recompute FLOPs (% of forward)" in out and "3 rounds" in out


def test_plan_prints_the_plan_and_the_largest_batches(capsys):
    code, out, _ = _run(capsys, "plan", "--depth", "12", "--width", "32", "--batch", "32", "--budget", "200kB")
    assert code == 0
    assert "planned: 12 layer forwards" in out and "bytes" not in out
    table = out[out.index("strategy"):].splitlines()
    names = [line.split()[0].split(":")[0] for line in table[1:6]]     # sqrt:k, revolve:s: the fitted option
    assert names[:3] == ["none", "sqrt", "recursive"]
    batches = {line.split()[0].split(":")[0]: int(re.search(r"\s(?:yes|no)\s+(\d+)", line).group(1)) for line in table[1:6]}
    # less memory per sample, a larger batch: none <= sqrt <= recursive <= revolve with one slot
    assert batches["none"] <= batches["sqrt"] <= batches["recursive"]


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--seed", "-1"], "expected an integer seed from 0 to 2**32 - 1, got -1"),
    (["train", "--seed", "x"], "expected an integer seed"),
    (["train", "--holdout", "1"], "expected a fraction from 0 to 0.9"),
    (["train", "--checkpoint", "sqrt:slots=3"], "sqrt takes segments=, not slots="),
    (["train", "--checkpoint", "recursive:2"], "recursive takes no options"),
    (["train", "--checkpoint", "budget"], "budget needs a size"),
    (["train", "--plot", "no/such/folder/run.png"], "the folder 'no/such/folder' does not exist"),
    (["train", "--plot", "run.txt"], "cannot write a plot as '.txt'"),
    (["compare", "--plot", "."], "is a folder; give a file name"),
    (["plan", "--budget", "1MB", "--dtype", "int8"], "invalid choice"),
    (["train", "--lr", "-1"], "expected a positive number"),
    (["train", "--dataset", "mnist"], "invalid choice"),
    (["train", "--checkpoint", "magic"], "invalid checkpoint strategy"),
    (["train", "--checkpoint", "revolve:0"], "slots S >= 1"),
    (["train", "--frobnicate"], "unrecognized arguments"),
    (["plan", "--budget", "lots"], "cannot read a byte size"),
    (["plan"], "the following arguments are required: --budget"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""
    assert len(out.err.splitlines()) == 1, out.err


def test_a_bad_plot_path_is_refused_before_any_work(capsys, tmp_path):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:     # 10**6 epochs would take hours: the path is checked first
        main(["train", "--epochs", "1000000", "--plot", str(tmp_path / "missing" / "run.png")])
    assert exc.value.code == 2 and time.perf_counter() - start < 5
    assert capsys.readouterr().err.count("\n") == 1


def test_a_plot_path_without_a_suffix_is_written_and_named_as_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = _run(capsys, "train", "--samples", "20", "--epochs", "1", "--quiet", "--plot",
                        str(tmp_path / "run"))
    assert code == 0 and (tmp_path / "run.png").stat().st_size > 1000
    assert f"wrote {tmp_path / 'run.png'}" in out and "1 epoch in" in out


def test_a_budget_below_what_the_chain_needs_is_one_line(capsys):
    for argv in (["plan", "--budget", "1kB", "--depth", "10", "--quiet"],
                 ["train", "--checkpoint", "budget:10kB", "--epochs", "1", "--quiet"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.splitlines()) == 1
        assert re.search(r"below the least this chain needs.*\d\.\d+ MB", out.err)


def test_train_budgets_at_the_readme_sizes_work_and_state_the_minimum(capsys):
    code, out, _ = _run(capsys, "train", "--samples", "40", "--epochs", "2", "--quiet", "--checkpoint",
                        "budget:500kB")
    assert code == 0
    least, plain = map(float, re.search(r"at least (\S+) MB, (\S+) MB without checkpointing", out).groups())
    assert least <= plain
    assert "checkpoint budget (budget 0.500 MB)" in out


def test_deep_residual_training_learns_and_sqrt_saves_memory_at_the_same_accuracy(capsys):
    args = ["train", "--depth", "32", "--width", "32", "--samples", "60", "--epochs", "12", "--lr", "0.01",
            "--quiet", "--device", "cpu"]
    _, plain, _ = _run(capsys, *args)
    _, sqrt, _ = _run(capsys, *args, "--checkpoint", "sqrt")
    acc = lambda text: re.search(r"training accuracy (\S+).*held-out accuracy (\S+)", text).groups()  # noqa: E731
    peak = lambda text: float(re.search(r"peak activation memory (\S+) MB", text).group(1))  # noqa: E731
    assert acc(plain) == acc(sqrt) and float(acc(plain)[0]) > 0.6      # chance is 1/3
    assert peak(sqrt) < peak(plain) / 2
    assert "checkpoint sqrt: " in sqrt and "block forwards per step (32 without" in sqrt


def test_progress_in_a_log_is_lines_and_no_thread_is_left_behind(capsys):
    before = set(threading.enumerate())
    code, _, err = _run(capsys, "train", "--samples", "20", "--epochs", "2", "--device", "cpu")
    assert code == 0
    assert "\r" not in err and all(len(line) < 200 for line in err.splitlines())
    assert "train:" in err and len(err.splitlines()) <= 2     # a line every 10 s at most, not one per epoch
    assert set(threading.enumerate()) <= before        # tqdm's monitor thread is never started


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"minigrad {mg.__version__}"


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_is_one_line_and_exit_130():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the default disposition, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen([sys.executable, "-m", "minigrad", "train", "--epochs", "100000", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr.read(6) == "train:"      # the bar's first line: training has started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "python -m minigrad train: interrupted"
    assert "Traceback" not in err and out == ""


@pytest.mark.skipif(mg.cuda_available(), reason="a GPU is present, so --device cuda works")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--device", "cuda", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "CuPy" in err and 'python -m pip install ".[cuda12]"' in err and len(err.splitlines()) == 1


def test_help_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "minigrad", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--dataset", "--depth", "--width", "--batch", "--epochs", "--lr", "--optimizer", "--seed",
                   "--device", "--plot", "--checkpoint"):
        assert option in out.stdout
