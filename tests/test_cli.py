"""The command line: train, compare and plan run end to end; bad input exits 2 with a clear message."""
import re
import subprocess
import sys

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
    assert "budget(L=12, budget=200,000)" in out
    table = out[out.index("strategy"):].splitlines()
    names = [line.split()[0] for line in table[1:6]]
    assert names[:3] == ["none", "sqrt", "recursive"]
    batches = {line.split()[0]: int(re.search(r"\s(?:yes|no)\s+(\d+)", line).group(1)) for line in table[1:6]}
    # less memory per sample, a larger batch: none <= sqrt <= recursive <= revolve with one slot
    assert batches["none"] <= batches["sqrt"] <= batches["recursive"]


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--lr", "-1"], "expected a positive number"),
    (["train", "--dataset", "mnist"], "invalid choice"),
    (["train", "--checkpoint", "magic"], "invalid checkpoint strategy"),
    (["train", "--checkpoint", "revolve:0"], "slots S >= 1"),
    (["train", "--frobnicate"], "unrecognized arguments"),
    (["plan", "--budget", "lots"], "cannot read a byte size"),
    (["plan"], "the following arguments are required: --budget"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(mg.cuda_available(), reason="a GPU is present, so --device cuda works")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--device", "cuda", "--quiet"])
    assert exc.value.code == 2
    assert "CuPy" in capsys.readouterr().err


def test_help_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "minigrad", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--dataset", "--depth", "--width", "--batch", "--epochs", "--lr", "--optimizer", "--seed",
                   "--device", "--plot", "--checkpoint"):
        assert option in out.stdout
