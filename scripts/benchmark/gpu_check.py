"""One prepared check for a lent GPU machine, in at most about 8 minutes (see gpu_check.sh):

1. the GPU-only tests (``pytest -m gpu``: no host sync in training steps through a real Trainer
   with LARS, nvJPEG streamed decoding, a compiled step equal to the eager one, DALI's GPU
   operators where DALI is installed);
2. pretraining speed of the BYOL CIFAR-10 recipe (ResNet-18, batch 256, bf16) through the cpu
   pipeline (a worker per core), the gpu pipeline, and the gpu pipeline compiled;
3. one BYOL training step of ViT-S/16 and ResNet-50 at 224 px on a fixed batch of 128
   (images/s, peak memory; scripts/benchmark/backbone_step.py);
4. BYOL with the shipped CIFAR-10 recipe for 36 epochs through the gpu pipeline: the online
   linear probe's and the kNN's (k=20, cosine) acc@1 on the 10,000 test images, and the wall
   time; then one short run per later method or backbone that exists (the ViT, ...), for speed;
5. everything in ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``, the table printed.

Each step runs in its own process with a time limit and is reported whatever the others did:
a step's limit is its share of the whole check plus what the steps before it left unused, so the
check ends within the sum of the shares, and the reports are rewritten after every step, so a check
stopped from outside keeps the steps it finished.
``--dry-run`` does the same on the CPU at toy size (two steps of a slice of the images), so CI
tests that the script runs end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solo.utils.checkpoint import write_atomic, write_json_atomic  # noqa: E402

CIFAR_RECIPES = ROOT / "scripts" / "pretrain" / "cifar"
# (name, what it needs registered, Hydra overrides of the BYOL CIFAR recipe): the short speed runs
# of what later issues add, each run only once it exists
SHORT_RUNS = [
    ("byol-vit_small", ("byol", "vit_small"),
     ["++backbone.name=vit_small", "++backbone.kwargs.patch_size=4",
      "++backbone.kwargs.img_size=32"]),
    ("mocov3", ("mocov3", "resnet18"), ["++method=mocov3"]),
    # BYOL's predictor width is no DINO key; its head is 2048 wide, as its recipe
    ("dino", ("dino", "resnet18"), ["++method=dino", "~method_kwargs.pred_hidden_dim",
                                    "++method_kwargs.proj_hidden_dim=2048"]),
]


class StepClock:
    """The steps' time limits: a step may use its share plus what the steps before it left
    unused, so a quick step gives its time to the next (the accuracy run, above all) and the
    whole check never runs past the sum of the shares."""

    def __init__(self, shares: dict[str, float]) -> None:
        self.shares, self.unused = shares, 0.0

    def limit(self, share: str) -> float:
        return self.shares[share] + self.unused

    def spent(self, limit: float, seconds: float) -> None:
        self.unused = max(0.0, limit - seconds)


def run_step(name: str, command: list[str], share: str, args: argparse.Namespace
             ) -> dict[str, Any]:
    """Run ``command`` within ``share``'s time limit; its output goes to
    ``<args.logs>/<name>.log``."""
    timeout = args.clock.limit(share)
    print(f"=== {name} (at most {timeout:.0f} s): {' '.join(command)}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p), "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline"}
    # its own process group, so that a step stopped at its limit is stopped with everything it
    # started (DataLoader workers, compile workers) instead of leaving them to slow the next step
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace",
                          preexec_fn=os.setpgrp) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
            status = "ok" if process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()  # what it printed before
            status = "timeout"
        except BaseException:  # Ctrl-C reaches the terminal's process group, not the step's
            os.killpg(process.pid, signal.SIGKILL)
            raise
    seconds = time.perf_counter() - start
    args.clock.spent(timeout, seconds)
    (args.logs / f"{name}.log").write_text(output)
    tail = output.strip().splitlines()[-40:]
    print(f"--- {name}: {status} in {seconds:.0f} s\n" + "\n".join(tail[-15:]), flush=True)
    return {"status": status, "seconds": round(seconds, 1), "limit": round(timeout, 1),
            "output": output, "tail": tail}


def environment() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "cores": os.cpu_count()}
    for package in ("torchvision", "lightning", "timm", "torchmetrics"):
        try:
            facts[package] = __import__(package).__version__
        except ImportError:
            facts[package] = None
    try:
        import nvidia.dali  # noqa: F401

        facts["dali"] = nvidia.dali.__version__
    except ImportError:
        facts["dali"] = None
    facts["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return facts


def gpu_tests(args: argparse.Namespace) -> dict[str, Any]:
    step = run_step("gpu_tests", [sys.executable, "-m", "pytest", "-m", "gpu", "-q",
                                  "-p", "no:cacheprovider", "tests"], "tests", args)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)",
                                                     step["output"])}
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", step["output"], flags=re.M)
    if step["status"] == "failed" and not counts.get("failed") and not failures:
        step["status"] = "error"
    return {**step, "counts": counts, "failures": failures}


def benchmark(name: str, script: str, arguments: list[str], share: str,
              args: argparse.Namespace) -> dict[str, Any]:
    """A benchmark script run as a step, with ``--json`` pointed into the logs: the step's
    figures are what it wrote there (the scripts write after each variant, so a step that ran
    out of time keeps the variants it finished)."""
    result_file = args.logs / f"{name}.json"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark" / script), *arguments,
               "--json", str(result_file)]
    step = run_step(name, command, share, args)
    if result_file.is_file():
        step["figures"] = json.loads(result_file.read_text())
    return step


def speed(args: argparse.Namespace) -> dict[str, Any]:
    # the gpu pipeline first, the compiled one (its compile time unknown) last: a step stopped at
    # its limit loses the least telling figure
    arguments = ["--train-path", str(args.data / "train"), "--pipelines", "gpu,cpu,gpu-compiled",
                 "--num-workers", str(os.cpu_count() if not args.dry_run else 0),
                 "--epochs", str(args.speed_epochs)]
    if args.dry_run:
        arguments += ["--cpu", "-o", "++optimizer.batch_size=8", "-o", "++limit_train_batches=2",
                      "-o", "++performance.compile_backend=aot_eager"]
    return benchmark("speed", "pretrain_speed.py", arguments, "speed", args)


def backbone_step(args: argparse.Namespace) -> dict[str, Any]:
    arguments = ["--train-path", str(args.data / "train"), "--backbones", "vit_small,resnet50"]
    if args.dry_run:
        arguments += ["--cpu", "--image-size", "64", "--batch-size", "2", "--steps", "1",
                      "--warmup", "1", "--backbones", "vit_small"]
    return benchmark("backbone_step", "backbone_step.py", arguments, "backbone", args)


SUMMARY = {"knn": re.compile(r"kNN acc@1 \(k=20, cosine\) on .*?: (?:before ([\d.]+)% -> )?"
                             r"after ([\d.]+)%"),
           "probe": re.compile(r"online linear probe acc@1: ([\d.]+)%")}


def pretrain(args: argparse.Namespace, name: str, epochs: int, extra: list[str],
             share: str) -> dict[str, Any]:
    """main_pretrain.py on the shipped BYOL CIFAR-10 recipe through the gpu pipeline."""
    runs = args.logs / "runs" / name
    command = [sys.executable, str(ROOT / "main_pretrain.py"), "--config-path", str(CIFAR_RECIPES),
               "--config-name", "byol.yaml", f"++name={name}",
               f"++data.train_path={args.data / 'train'}", f"++data.val_path={args.data / 'test'}",
               "++data.pipeline=gpu", f"++max_epochs={epochs}", "++knn_eval.enabled=True",
               "++knn_eval.k=20", "++knn_eval.distance_func=cosine", "++devices=1",
               "++strategy=auto", "++checkpoint.enabled=False", "++auto_resume.enabled=False",
               "++wandb.enabled=False", "++enable_progress_bar=False", "++num_sanity_val_steps=0",
               f"++check_val_every_n_epoch={epochs}", f"++checkpoint.dir={runs}",
               f"++data.num_workers={os.cpu_count() if not args.dry_run else 0}", *extra]
    if args.dry_run:
        command += ["++accelerator=cpu", "++precision=32", "++optimizer.batch_size=8",
                    "++limit_train_batches=2", "++limit_val_batches=2"]
    step = run_step(name, command, share, args)
    knn, probe = SUMMARY["knn"].search(step["output"]), SUMMARY["probe"].search(step["output"])
    step["knn_acc1_before"] = float(knn.group(1)) if knn and knn.group(1) else None
    step["knn_acc1"] = float(knn.group(2)) if knn else None
    step["probe_acc1"] = float(probe.group(1)) if probe else None
    step["epochs"] = epochs_done(runs)
    return step


def epochs_done(runs: Path) -> Optional[int]:
    """Epochs a run finished, from its CSV log (for a run that ran out of time)."""
    epochs = []
    for metrics in runs.rglob("metrics.csv"):
        lines = metrics.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split(",")
        if "epoch" in header:
            column = header.index("epoch")
            epochs += [int(float(row.split(",")[column])) for row in lines[1:]
                       if len(row.split(",")) > column and row.split(",")[column]]
    return max(epochs) + 1 if epochs else None


def short_runs(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """One short speed run per entry of SHORT_RUNS whose method and backbone exist, the report
    saved after each."""
    from solo.backbones import BACKBONES
    from solo.methods import METHODS

    results = report.setdefault("short_runs", {})
    for name, (method, backbone), overrides in SHORT_RUNS:
        if method not in METHODS or backbone not in BACKBONES:
            results[name] = {"status": "not available yet"}
            continue
        results[name] = pretrain(args, name, 1 if args.dry_run else 2, overrides, "short")
        save(report, args)
    return results


NOT_RUN = {"status": "not run yet"}  # a step of a report saved before it ran


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    title = "gpu_check" + (" (dry run, CPU, toy size)" if report["dry_run"] else "")
    done = "" if report.get("finished") else ", stopped or still running"
    lines = [f"# {title}", "",
             f"{env['device']}; Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), "
             f"torchvision {env['torchvision']}, Lightning {env['lightning']}, timm {env['timm']}, "
             f"DALI {env['dali'] or 'not installed'}; {env['cores']} cores; "
             f"{report['seconds']:.0f} s in all{done}", "",
             "| step | status | seconds | figures |", "| --- | --- | --- | --- |"]

    def row(label: str, step: dict[str, Any], figures: str) -> None:
        if "seconds" not in step:  # not run (yet, or not available)
            lines.append(f"| {label} | {step['status']} | | |")
        else:
            lines.append(f"| {label} | {step['status']} | {step['seconds']} | {figures} |")

    tests = report.get("gpu_tests", NOT_RUN)
    counts = ", ".join(f"{n} {word}" for word, n in tests.get("counts", {}).items()) or "none"
    failures = f"; failed: {', '.join(tests['failures'])}" if tests.get("failures") else ""
    row("GPU-only tests", tests, counts + failures)
    speed_step = report.get("speed", NOT_RUN)
    row("speed", speed_step, "see below")
    runs = {"byol_36": report.get("byol_36", NOT_RUN), **report.get("short_runs", {})}
    for key, step in runs.items():
        row(key, step, f"probe acc@1 {step.get('probe_acc1')}%, kNN acc@1 {step.get('knn_acc1')}% "
                       f"(before {step.get('knn_acc1_before')}%), {step.get('epochs')} epochs")
    step = report.get("backbone_step", NOT_RUN)
    row("backbone step", step, "see below")
    figures = speed_step.get("figures")
    if figures:
        lines += ["", f"Pretraining speed, {figures['recipe']}, {figures['epochs']} epochs "
                      "(the first left out):", "",
                  "| pipeline | s/epoch | images/s | GPU busy | peak GiB | vs cpu |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for variant, r in figures["results"].items():
            busy = f"{r['busy']:.0f}%" if r["busy"] is not None else "n/a"
            memory = f"{r['memory']:.2f}" if r["memory"] is not None else "n/a"
            ratio = f"{r['vs_cpu']:.1f}x" if r.get("vs_cpu") else "n/a"
            lines.append(f"| {variant} | {r['seconds']:.2f} | {r['images']:.0f} | {busy} | "
                         f"{memory} | {ratio} |")
    if step.get("figures"):
        lines += ["", "One BYOL training step on a fixed batch (the model's cost alone):", "",
                  "| backbone | px | batch | precision | images/s | peak GiB | channels_last |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['backbone']} | {r['image_size']} | {r['batch_size']} | {r['precision']} "
                  f"| {r['images_per_second']:.0f} | {r['peak_memory_gib']:.2f} | "
                  f"{r['channels_last']} |" for r in step["figures"]]
    return "\n".join(lines) + "\n"


def save(report: dict[str, Any], args: argparse.Namespace) -> str:
    """Both reports as they stand, each written atomically (a kill leaves the last whole one);
    the steps' whole outputs stay in their logs. Returns the Markdown table."""
    report["seconds"] = time.perf_counter() - args.start
    shown = json.loads(json.dumps(report, default=str))
    for key, _ in STEPS.values():
        for step in shown.get(key, {}).values() if key == "short_runs" else [shown.get(key, {})]:
            step.pop("output", None)
    write_json_atomic(args.out / "gpu_check.json", shown)
    table = markdown(shown)
    write_atomic(args.out / "gpu_check.md", lambda handle: handle.write(table.encode()))
    return table


# the check's steps in their order: --steps name -> (its key in the report, what runs it)
STEPS: dict[str, tuple[str, Callable[[argparse.Namespace, dict[str, Any]], Any]]] = {
    "tests": ("gpu_tests", lambda args, report: gpu_tests(args)),
    "speed": ("speed", lambda args, report: speed(args)),
    "backbone": ("backbone_step", lambda args, report: backbone_step(args)),
    "train": ("byol_36", lambda args, report: pretrain(args, "byol_36", args.epochs, [], "train")),
    "short": ("short_runs", short_runs),  # a run each, the report saved after each
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--data", type=Path, default=None,
                        help="a CIFAR-10 folder with train/ and test/ (ImageFolder); default "
                             "/tmp/data/cifar10, or the repository's CIFAR-10 subset for a dry run")
    parser.add_argument("--logs", type=Path, default=None,
                        help="each step's whole output and run folders (default: a temporary "
                             "folder; the device tool brings back only a few files of --out)")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU at toy size: checks that every step runs")
    parser.add_argument("--epochs", type=int, default=36, help="the accuracy run's epochs")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="comma-separated, of " + ", ".join(STEPS) + " (default all): a "
                             "rerun of the steps a first check left failed, on a warm machine")
    args = parser.parse_args()
    args.steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown or not args.steps:
        parser.error(f"--steps: {', '.join(unknown) or 'none given'}; choose from "
                     f"{', '.join(STEPS)}")
    if args.data is None:
        args.data = ROOT / "data" / "cifar10-mini" if args.dry_run else Path("/tmp/data/cifar10")
    if args.dry_run:
        args.epochs = 1
    args.speed_epochs = 2 if args.dry_run else 3
    # each step's share of the check in seconds; a step also gets what those before it left
    # unused. On the GPU they add up to 480 s, so that the whole check, with its start, the
    # wheels' install and each process's start-up, stays near 8 minutes.
    if args.dry_run:
        shares = {"tests": 300, "speed": 400, "backbone": 300, "train": 300, "short": 300}
    else:
        shares = {"tests": 100, "speed": 125, "backbone": 30, "train": 165, "short": 20}
    args.clock = StepClock(shares)
    if not (args.data / "train").is_dir():
        raise SystemExit(f"--data: '{args.data}' has no train/ folder (unpack CIFAR-10 there)")
    args.out.mkdir(parents=True, exist_ok=True)
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    args.logs.mkdir(parents=True, exist_ok=True)

    args.start = time.perf_counter()
    report: dict[str, Any] = {"dry_run": args.dry_run, "finished": False,
                              "environment": environment(), "logs": str(args.logs)}
    save(report, args)
    for name, (key, run) in STEPS.items():
        if name in args.steps:
            report[key] = run(args, report)
        else:  # a rerun of other steps: this one neither ran nor failed
            skipped = {"status": "not chosen (--steps)"}
            report[key] = {"short runs": skipped} if key == "short_runs" else skipped
        save(report, args)
    report["finished"] = True
    print("\n" + save(report, args))


if __name__ == "__main__":
    main()
