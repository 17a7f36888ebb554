"""The command line: train with every feature, save, plot, JSON; evaluate; predict."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import nbbackprop as nb
from nbbackprop.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, *args):
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_train_save_plot_evaluate_predict(runner, tmp_path):
    pytest.importorskip("matplotlib")
    model, png = tmp_path / "m.npz", tmp_path / "curve.png"
    r = run(runner, "train", "--epochs", 3, "--save", model, "--plot", png,
            "--monitor-train-accuracy")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "epoch 3/3" in r.output and "test accuracy:" in r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    net = nb.load(model)
    assert net.epochs_trained == 3 and net.sizes == (64, 30, 10)

    r = run(runner, "evaluate", model)
    assert r.exit_code == 0, r.output
    _, (Xt, yt) = nb.datasets.load_digits()
    acc = net.evaluate(Xt, yt)
    assert f"accuracy: {acc:.4f}" in r.output and "confusion matrix" in r.output
    rows = r.output.strip().splitlines()[-10:]
    matrix = np.array([[int(c) for c in row.split()[1:]] for row in rows])
    assert matrix.sum() == len(yt) and np.trace(matrix) == round(acc * len(yt))

    np.save(tmp_path / "x.npy", Xt[:4])
    r = run(runner, "predict", model, tmp_path / "x.npy")
    assert r.exit_code == 0, r.output
    assert [int(s) for s in r.output.split()] == list(net.predict(Xt[:4]))
    r = run(runner, "predict", model, tmp_path / "x.npy", "--outputs", "--out", tmp_path / "o.npy")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), net.feedforward(Xt[:4]))


def test_train_json_with_every_feature(runner, tmp_path):
    r = run(runner, "train", "--json", "--epochs", 4, "--sizes", "64,16,10", "--activation",
            "relu,softmax", "--cost", "log_likelihood", "--init", "he", "--lmbda", 0.5,
            "--optimizer", "adam", "--eta", 0.01, "--schedule", "step", "--step-size", 2,
            "--early-stopping", "--patience", 3, "--restore-best", "--dtype", "float32",
            "--checkpoint", tmp_path / "ck.npz")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["activations"] == ["relu", "softmax"] and out["sizes"] == [64, 16, 10]
    assert out["history"]["eta"] == [0.01, 0.01, 0.005, 0.005]
    assert len(out["history"]["val_cost"]) == 4 and 0.5 < out["test_accuracy"] <= 1
    assert nb.load(tmp_path / "ck.npz").epochs_trained == 4


def test_train_quiet_prints_one_line(runner):
    r = run(runner, "train", "--epochs", 1, "--quiet", "--optimizer", "nesterov", "--eta", 0.5)
    assert r.exit_code == 0 and r.output.count("\n") == 1 and "test accuracy" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--cost", "log_likelihood", "--output-activation", "sigmoid"], "softmax"),
        (["train", "--sizes", "10,5"], "64 features"),
        (["train", "--epochs", "1", "--patience", "0", "--early-stopping"], "patience"),
        (["evaluate", "missing.npz"], "no such model file"),
        (["train", "--data", "mnist:/nonexistent"], "MNIST"),
    ],
)
def test_errors_are_one_line_with_status_2(runner, args, message):
    r = runner.invoke(main, args)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_plot_without_matplotlib_says_how_to_install(runner, tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = runner.invoke(main, ["train", "--epochs", "1", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 2
    assert "pip install 'nbbackprop[plot]'" in r.output
    assert not (tmp_path / "c.png").exists()


def test_predict_rejects_bad_input(runner, tmp_path):
    nb.Network([64, 5, 10], seed=0).save(tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    r = runner.invoke(main, ["predict", str(tmp_path / "m.npz"), str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "64 features" in r.output
    (tmp_path / "bad.npy").write_bytes(b"junk")
    r = runner.invoke(main, ["predict", str(tmp_path / "m.npz"), str(tmp_path / "bad.npy")])
    assert r.exit_code == 2 and "not a readable" in r.output


def test_train_on_cuda_without_a_gpu_is_a_one_line_error(monkeypatch):
    from nbbackprop import devices

    status = devices.CudaStatus(False, False, "no NVIDIA driver (test)")
    monkeypatch.setattr(devices, "cuda_status", lambda: status)
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--device", "cuda"])
    assert result.exit_code == 2
    assert "no NVIDIA driver (test)" in result.output
    assert "Traceback" not in result.output
