"""Training curves from a run's CSV logs: one small panel per metric, several runs overlaid.

Every pretraining and linear-evaluation run ends by writing ``curves.png`` into its run folder;
``python -m solo.plot RUN_DIR [RUN_DIR ...] [--out PATH]`` draws or compares runs afterwards.
matplotlib is the ``plot`` extra (``pip install 'solo[plot]'``); without it a run skips its PNG
with a one-line hint. This module imports neither torch nor Lightning, so the command starts fast.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_NAME = "curves.png"
INSTALL_HINT = "pip install 'solo[plot]'"
# one panel each, in this order; a panel draws the first of its columns that the log has (a value
# logged on_step and on_epoch becomes <name>_step and <name>_epoch; steps are logged only every
# log_every_n_steps, so a short run may have the epoch column alone)
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train_loss", ("train_loss_step", "train_loss", "train_loss_epoch")),  # SSL or linear loss
    ("val_loss", ("val_loss", "val_loss_epoch")),
    ("val_acc1", ("val_acc1", "val_acc1_epoch")),  # the online probe, or the linear classifier
    ("knn_acc1", ("knn_acc1",)),
    ("lr", ("lr", "lr_step")),
)
X_COLUMNS = ("step", "epoch")  # the x axis: the first of these that the log has
PANEL_SIZE = (3.6, 2.8)  # inches, a panel with its title and axis labels
LEGEND_COLUMNS = 4

Series = tuple[list[float], list[float]]  # (x values, y values)


def metrics_files(run_dir: Path) -> list[Path]:
    """The run's ``logs/version_<K>/metrics.csv`` in the order the starts wrote them (a resume adds
    a version), or a ``metrics.csv`` directly inside ``run_dir``."""
    run_dir = Path(run_dir)
    versions = [p for p in (run_dir / "logs").glob("version_*/metrics.csv")
                if p.parent.name.removeprefix("version_").isdigit()]
    if versions:
        return sorted(versions, key=lambda p: int(p.parent.name.removeprefix("version_")))
    return [run_dir / "metrics.csv"] if (run_dir / "metrics.csv").is_file() else []


def _number(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_metrics_csv(path: Path) -> tuple[str, dict[str, Series]]:
    """``(x column, {metric: (xs, ys)})`` of one CSVLogger file; a cell left empty means that row
    did not log that metric and adds no point."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0].keys()) if rows else []
    x_column = next((c for c in X_COLUMNS if c in columns), "row")
    curves: dict[str, Series] = {}
    for index, row in enumerate(rows):
        x = float(index) if x_column == "row" else _number(row.get(x_column))
        if x is None:
            continue
        for name in columns:
            y = _number(row.get(name))
            if name in X_COLUMNS or y is None:
                continue
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(x)
            ys.append(y)
    return x_column, curves


def read_curves(run_dir: Path) -> tuple[str, dict[str, Series]]:
    """Every metric of a run over all its starts. A resumed start redoes the steps since its
    checkpoint, so its points replace the earlier start's from its first step on."""
    x_column = "step"
    merged: dict[str, Series] = {}
    for path in metrics_files(run_dir):
        logged_x, curves = read_metrics_csv(path)
        starts = [xs[0] for xs, _ in curves.values() if xs]
        if not starts:  # a start that logged nothing (killed early, or nothing left to train)
            continue
        x_column, first = logged_x, min(starts)
        for name, (xs, ys) in curves.items():
            old_xs, old_ys = merged.get(name, ([], []))
            kept = [i for i, x in enumerate(old_xs) if x < first]
            merged[name] = ([old_xs[i] for i in kept] + xs, [old_ys[i] for i in kept] + ys)
    return x_column, merged


def panel_series(curves: dict[str, Series]) -> dict[str, tuple[str, Series]]:
    """``{panel title: (column drawn, series)}`` for the PANELS that ``curves`` has."""
    panels = {}
    for title, candidates in PANELS:
        column = next((c for c in candidates if curves.get(c, ([], []))[0]), None)
        if column is not None:
            panels[title] = (column, curves[column])
    return panels


def curves_figure(runs: dict[str, tuple[str, dict[str, Series]]]) -> "Figure":
    """A figure with one panel per metric that any run logged, each run a line in its own colour,
    labelled by its name. ``runs``: {name: read_curves(...)}. ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_run = {name: panel_series(curves) for name, (_, curves) in runs.items()}
    titles = [title for title, _ in PANELS if any(title in panels for panels in per_run.values())]
    x_label = next(iter(runs.values()))[0] if runs else "step"
    columns = min(3, max(1, len(titles)))
    rows = max(1, -(-len(titles) // columns))
    legend_rows = -(-len(runs) // LEGEND_COLUMNS) if len(runs) > 1 else 1  # or the run's name
    top = 0.1 + 0.25 * legend_rows  # inches above the panels' titles
    width, height = PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + top
    # a Figure without pyplot: no global state, and the Agg canvas needs no display
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    # margins in inches, set by hand: a layout engine would draw the figure twice, and every run
    # in the test suite ends by drawing one
    left, right, above, below = 0.7, 0.15, 0.3, 0.5  # y ticks, -, panel title, x ticks and label
    axes_width, axes_height = PANEL_SIZE[0] - left - right, PANEL_SIZE[1] - above - below
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=below / height,
                           top=1 - (top + above) / height, wspace=(left + right) / axes_width,
                           hspace=(above + below) / axes_height)
    handles = {}
    for index, title in enumerate(titles):
        axes = figure.add_subplot(rows, columns, index + 1)
        drawn = set()
        for colour, (name, panels) in enumerate(per_run.items()):
            if title not in panels:
                continue
            column, (xs, ys) = panels[title]
            drawn.add(column)
            # markers when the points are few, or a one-point series would not show at all
            (line,) = axes.plot(xs, ys, color=f"C{colour % 10}", label=name, linewidth=1.2,
                                marker="o" if len(xs) < 30 else None, markersize=3)
            handles.setdefault(name, line)
        axes.set_title(" / ".join(sorted(drawn)) if len(drawn) > 1 else drawn.pop(), fontsize=10)
        axes.set_xlabel(x_label, fontsize=9)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
    if not titles:
        figure.text(0.5, 0.5, "no curves logged", ha="center", va="center")
    if len(runs) > 1:
        figure.legend(list(handles.values()), list(handles), loc="upper center", frameon=False,
                      ncols=min(LEGEND_COLUMNS, len(handles)), fontsize=9)
    elif runs:
        figure.suptitle(next(iter(runs)), fontsize=10)
    return figure


def plot_runs(run_dirs: Sequence[Path], out: Path) -> "Figure":
    """Draw the runs' curves (labelled by run folder name) into the PNG ``out``, written
    atomically; returns the figure. Raises ImportError without matplotlib."""
    runs = {Path(d).resolve().name: read_curves(d) for d in run_dirs}
    figure = curves_figure(runs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    figure.savefig(tmp, format="png")
    os.replace(tmp, out)
    return figure


def write_run_curves(run_dir: Path) -> Optional[Path]:
    """The end of a run: ``<run_dir>/curves.png`` from its CSV logs. Never raises: without
    matplotlib (or without logs) it prints one line and returns None."""
    if not metrics_files(run_dir):
        return None
    try:
        plot_runs([run_dir], Path(run_dir) / PNG_NAME)
    except ImportError:
        print(f"{PNG_NAME} not written: matplotlib is not installed ({INSTALL_HINT})",
              file=sys.stderr)
        return None
    except Exception as error:  # a finished run must not fail for its picture
        print(f"{PNG_NAME} not written: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    return Path(run_dir) / PNG_NAME


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m solo.plot",
        description="Draw the training curves of one run, or compare several, from their CSV logs.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="a run folder (holding logs/version_*/metrics.csv)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the PNG to write (default: RUN_DIR/{PNG_NAME} for one run, "
                             f"./{PNG_NAME} for several)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"solo.plot needs matplotlib, which is not installed: {INSTALL_HINT}",
              file=sys.stderr)
        return 1
    missing = [str(d) for d in args.run_dirs if not metrics_files(d)]
    if missing:
        print(f"no metrics.csv under {', '.join(missing)} (expected RUN_DIR/logs/version_*/"
              "metrics.csv)", file=sys.stderr)
        return 2
    out = args.out or (args.run_dirs[0] / PNG_NAME if len(args.run_dirs) == 1 else Path(PNG_NAME))
    plot_runs(args.run_dirs, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
