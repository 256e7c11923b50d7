"""Training curves: the PNG a real short run writes, the series read from its CSV, the CLI, and the
hint when matplotlib is missing."""

from __future__ import annotations

import csv
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from solo.plot import PNG_NAME, curves_figure, read_curves
from solo.pretrain import pretrain
from tests.helpers import shipped_config

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a subprocess in which `import matplotlib` fails, as where the extra is not installed
NO_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "


def tiny_run(method: str, data: Path, checkpoints: Path) -> Path:
    """One epoch of two steps, every step logged, with the kNN before and after, so the CSV has
    every panel's metric. A ViT with 16 px patches sees 4 tokens of a CIFAR image: a second or two
    of CPU, where a ResNet-18 takes ten."""
    cfg = shipped_config(method, data, [
        f"++checkpoint.dir={checkpoints}", "++backbone.name=vit_tiny",
        "++backbone.kwargs.patch_size=16", "++optimizer.batch_size=8", "++max_epochs=1",
        "++limit_train_batches=2", "++limit_val_batches=1", "++log_every_n_steps=1",
        "++knn_eval.enabled=True", "++enable_progress_bar=False", "++enable_model_summary=False"])
    return pretrain(cfg).run_dir


@pytest.fixture(scope="module")
def runs(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    checkpoints = tmp_path_factory.mktemp("runs")
    return [tiny_run("simclr", cifar_mini, checkpoints), tiny_run("byol", cifar_mini, checkpoints)]


def csv_columns(path: Path) -> dict[str, list[tuple[float, float]]]:
    """The reference: every metric's (step, value) pairs, the rows where its cell is filled."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [(float(row["step"]), float(row[name])) for row in rows if row[name] != ""]
            for name in rows[0] if name not in ("step", "epoch")}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_read_curves_keeps_empty_cells_out_and_lets_a_resumed_start_replace_steps(
        tmp_path: Path) -> None:
    first, second = tmp_path / "logs" / "version_0", tmp_path / "logs" / "version_1"
    first.mkdir(parents=True)
    second.mkdir()
    (first / "metrics.csv").write_text(
        "epoch,lr,step,train_loss_step,val_acc1\n"
        "0,0.1,0,5.0,\n0,0.2,1,4.0,\n0,,1,,0.3\n0,0.3,2,3.5,\n")  # killed after step 2
    (second / "metrics.csv").write_text(  # resumed from the checkpoint at the end of step 1
        "epoch,lr,step,train_loss_step,val_acc1\n1,0.25,2,3.0,\n1,,3,,0.5\n")
    (tmp_path / "logs" / "version_2").mkdir()  # started again with nothing left to train
    (tmp_path / "logs" / "version_2" / "metrics.csv").write_text("epoch,step\n")
    x_column, curves = read_curves(tmp_path)
    assert x_column == "step"
    assert curves["train_loss_step"] == ([0.0, 1.0, 2.0], [5.0, 4.0, 3.0])
    assert curves["lr"] == ([0.0, 1.0, 2.0], [0.1, 0.2, 0.25])
    assert curves["val_acc1"] == ([1.0, 3.0], [0.3, 0.5])


def test_a_pretraining_run_ends_with_its_curves_png(runs: list[Path]) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    from matplotlib.image import imread

    for run_dir in runs:
        png = run_dir / PNG_NAME
        width, height = png_size(png)
        assert width >= 600 and height >= 300 and png.stat().st_size > 10_000
        pixels = imread(png)
        assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05  # not a blank image


def test_the_series_drawn_are_the_csv_values(runs: list[Path]) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    run_dir = runs[0]
    (log,) = run_dir.glob("logs/version_*/metrics.csv")
    expected = csv_columns(log)
    x_column, curves = read_curves(run_dir)
    assert x_column == "step" and curves.keys() == expected.keys()
    for name, points in expected.items():
        assert list(zip(*curves[name])) == points, name
    # every step logged: the SSL loss and lr per step, the probe and kNN before and after training
    assert len(expected["train_loss_step"]) == 2 and len(expected["lr"]) == 2
    assert len(expected["knn_acc1"]) == 2

    figure = curves_figure({run_dir.name: (x_column, curves)})
    drawn = {axes.get_title(): axes.lines[0].get_xydata().tolist() for axes in figure.axes}
    assert list(drawn) == ["train_loss_step", "val_loss", "val_acc1", "knn_acc1", "lr"]
    for name, points in drawn.items():
        assert [tuple(p) for p in points] == expected[name], name


def test_cli_overlays_two_runs_labelled_by_folder(runs: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    out = tmp_path / "compare" / "both.png"
    result = subprocess.run([sys.executable, "-m", "solo.plot", *map(str, runs), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    width, height = png_size(out)
    assert width >= 600 and height >= 300 and out.stat().st_size > 10_000

    from solo.plot import plot_runs

    figure = plot_runs(runs, tmp_path / "again.png")
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [run.name for run in runs]
    for axes in figure.axes:  # both runs logged every panel
        assert [line.get_label() for line in axes.lines] == [run.name for run in runs]


def test_without_matplotlib_the_cli_and_the_end_of_run_print_one_line(runs: list[Path]) -> None:
    cli = subprocess.run(
        [sys.executable, "-c", NO_MATPLOTLIB + "import runpy; sys.argv = ['solo.plot', "
         f"{str(runs[0])!r}]; runpy.run_module('solo.plot', run_name='__main__')"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines() == [
        "solo.plot needs matplotlib, which is not installed: pip install 'solo[plot]'"]

    # what pretrain and linear_eval call at the end of a run: a hint, not a crash
    png = runs[0] / PNG_NAME
    before = png.stat().st_mtime_ns if png.exists() else None
    end = subprocess.run(
        [sys.executable, "-c", NO_MATPLOTLIB + "from solo.plot import write_run_curves; "
         f"print(write_run_curves({str(runs[0])!r}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert end.returncode == 0 and end.stdout.strip() == "None", end.stderr
    assert end.stderr.strip().splitlines() == [
        "curves.png not written: matplotlib is not installed (pip install 'solo[plot]')"]
    assert (png.stat().st_mtime_ns if png.exists() else None) == before
