"""Peak resident memory of ``vaeflows train`` against the hand-written script, side by side in one run.

Both train the same model (the MLP VAE of ``benchmarks/handwritten_vae.py``: 784-300-300, z = 40,
the chosen posterior, batch 100, Adamax) from the same statically binarized MNIST ``.npz``, for the
same short run (``--epochs``, default 1): training, the validation -ELBO, and the test -ELBO of the
best epoch. ``vaeflows train`` also writes its checkpoints, ``metrics.json`` and its PNGs; its test
NLL is skipped (``--nll-samples 0``: ten thousand points at S = 5000 take 20-30 minutes on a CPU);
the NLL's own buffers are measured below, on a few test points. Each command runs in a child
process of its own, in turn (the order alternating by round); its peak RSS is ``ru_maxrss`` of
``os.wait4``. The table gives the median over rounds and the ratio.

``--phases`` then runs ``vaeflows train`` once more inside an instrumented child, which reads its
own resident set (``/proc/self/status``) around the command's phases and resets the peak before
each one (``/proc/self/clear_refs``): imports, loading the data, training, the test figures, the
PNGs, and the importance-sampled NLL on ``--nll-points`` test points (``S = --nll-samples``) by
the reference computation and by the row-blocked one. tracemalloc does not see torch's
allocations; resident memory does.

``--baseline-root DIR`` adds a row for ``vaeflows train`` run from another checkout (e.g. the code
before a change: ``git archive COMMIT vaeflows | tar -x -C DIR``). ``--subset N`` trains on a copy
of the ``.npz`` cut to N images per split (the test suite's tiny size).

Example:
    python benchmarks/memory.py --rounds 2 --phases
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import DATA_DIR, machine, package_version, results_header, write_markdown  # noqa: E402

__all__ = ["peak_rss_mb", "main"]


def peak_rss_mb(command: List[str], env: Dict[str, str], cwd: Optional[Path] = None) -> float:
    """Run ``command`` (stdout discarded) and return its peak resident set in MB (``ru_maxrss``)."""
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024  # kB on Linux


def _subset_data(data_dir: str, subset: int, folder: Path) -> str:
    """A copy of ``binarized_mnist.npz`` cut to ``subset`` images per split, in ``folder``."""
    import numpy as np

    source = Path(data_dir) / "binarized_mnist" / "binarized_mnist.npz"
    (folder / "binarized_mnist").mkdir(parents=True, exist_ok=True)
    with np.load(source) as arrays:
        np.savez(folder / "binarized_mnist" / "binarized_mnist.npz", **{k: arrays[k][:subset] for k in arrays.files})
    return str(folder)


#: The instrumented child of ``--phases``: ``vaeflows train`` in-process, RSS around each phase.
PHASES_CHILD = r"""
import functools, json, sys
marks = []
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, value = line.split(":", 1)
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out
def mark(what):
    s = status()
    marks.append({"phase": what, "rss": s["VmRSS"], "peak": s["VmHWM"]})
def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) restarts from the current resident set
args = json.loads(sys.argv[1])
mark("python started"); reset()
import numpy
mark("import numpy"); reset()
import torch
torch.set_num_threads(1)
mark("import torch"); reset()
import pyro
mark("import pyro"); reset()
import vaeflows.cli as cli
import vaeflows.infer.experiment as experiment
mark("import vaeflows.cli, vaeflows.infer.experiment"); reset()
originals = {}
def wrap(name, label):
    inner = originals[name] = getattr(experiment, name)
    @functools.wraps(inner)
    def measured(*a, **k):
        mark(f"(before {label})"); reset()
        out = inner(*a, **k)
        mark(label); reset()
        return out
    setattr(experiment, name, measured)
wrap("load_dataset", "load the data set")
wrap("fit", "train (fit: epochs, validation, checkpoints)")
wrap("_test_figures", "test -ELBO (and NLL if --nll-samples > 0)")
wrap("_draw", "PNGs (report, matplotlib)")
if cli.main(args["train"]) != 0:
    raise SystemExit("vaeflows train failed")
mark("command done"); reset()
for name, inner in originals.items():
    setattr(experiment, name, inner)
modules = {m: m in sys.modules for m in ("matplotlib", "sklearn", "scipy", "torchvision", "pandas")}
from vaeflows.infer.evaluation import importance_sampled_log_likelihood
vae, _, data = experiment.load_run(args["out"], "cpu")
x = data.test[: args["nll_points"]]
for label, block in (("reference, whole chunks", 0), ("row-blocked (default on CPU)", None)):
    mark("(before NLL)"); reset()
    with pyro.validation_enabled(False):
        importance_sampled_log_likelihood(vae.model, vae.guide, x, args["nll_samples"], model_rows=block)
    mark(f"NLL, {args['nll_points']} points x S = {args['nll_samples']}: {label}"); reset()
print(json.dumps({"marks": marks, "modules": modules}))
"""


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--flow", default="planar", choices=["none", "planar"])
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each command, interleaved")
    parser.add_argument("--subset", type=int, help="images per split (a cut copy of the .npz)")
    parser.add_argument("--baseline-root", type=Path, help="also run `vaeflows train` from this checkout")
    parser.add_argument("--phases", action="store_true", help="also measure RSS per phase (instrumented child)")
    parser.add_argument("--nll-points", type=int, default=10, help="test points of the NLL phase")
    parser.add_argument("--nll-samples", type=int, default=5000, help="importance samples of the NLL phase")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory_cpu.md")
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data_dir = _subset_data(args.data_dir, args.subset, tmp_path / "data") if args.subset else args.data_dir
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

        def train_argv(out: Path) -> List[str]:
            argv = ["train", "--dataset", "binarized-mnist", "--data-dir", data_dir, "--arch", "mlp"]
            argv += ["--latent-dim", str(args.latent_dim), "--flow", args.flow, "--epochs", str(args.epochs)]
            argv += ["--warmup", "2", "--nll-samples", "0", "--no-progress", "--device", "cpu", "--out", str(out)]
            return argv

        def vaeflows_command(root: Path, tag: str):
            def command(i: int) -> List[str]:
                return [sys.executable, "-m", "vaeflows.cli", *train_argv(tmp_path / f"run_{tag}_{i}")]

            return command, {**env, "PYTHONPATH": str(root)}

        hand = [sys.executable, str(HERE / "handwritten_vae.py"), "--data-dir", data_dir, "--flow", args.flow]
        hand += ["--latent-dim", str(args.latent_dim), "--epochs", str(args.epochs), "--warmup", "2"]
        commands = {
            "hand-written script (`benchmarks/handwritten_vae.py`)": ((lambda i: hand), env),
            "`vaeflows train` (this checkout)": vaeflows_command(ROOT, "this"),
        }
        if args.baseline_root:
            commands[f"`vaeflows train` (code at `{args.baseline_root}`)"] = vaeflows_command(
                args.baseline_root.resolve(), "base"
            )
        peaks: Dict[str, List[float]] = {name: [] for name in commands}
        names = list(commands)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                command, command_env = commands[name]
                start = time.perf_counter()
                # `python -m` puts the working folder first on sys.path: run in the checkout measured.
                peaks[name].append(peak_rss_mb(command(round_), command_env, Path(command_env.get("PYTHONPATH", ROOT))))
                print(f"round {round_ + 1}: {name}: {peaks[name][-1]:.0f} MB ({time.perf_counter() - start:.0f} s)")
        phases = None
        if args.phases:
            child_args = {
                "train": train_argv(tmp_path / "run_phases"),
                "out": str(tmp_path / "run_phases"),
                "nll_points": args.nll_points,
                "nll_samples": args.nll_samples,
            }
            result = subprocess.run(
                [sys.executable, "-c", PHASES_CHILD, json.dumps(child_args)],
                env={**env, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"the instrumented run failed:\n{result.stderr[-3000:]}")
            phases = json.loads(result.stdout.strip().splitlines()[-1])

    median = {name: statistics.median(values) for name, values in peaks.items()}
    hand_name, this_name = names[0], names[1]
    lines = results_header(
        "Peak resident memory: `vaeflows train` against a hand-written script", "memory.py", argv, package_version()
    )
    lines += [
        f"- **Protocol**: the MLP VAE (784-300-300, z = {args.latent_dim}, flow {args.flow}, 4 steps), "
        f"statically binarized MNIST from the same `.npz`"
        + (f" cut to {args.subset} images per split" if args.subset else "")
        + f", {args.epochs} epoch(s), batch 100: training, validation and test -ELBO (`vaeflows train` also "
        "writes checkpoints, metrics and PNGs; `--nll-samples 0`). Each command in a child process of its "
        f"own, {args.rounds} round(s), interleaved; peak RSS = `ru_maxrss` of `os.wait4`. One torch thread. "
        "The machine is shared (2 cores, other jobs running): memory, unlike time, does not depend on the load.",
        "",
        "| command | peak RSS per round (MB) | median (MB) | ratio to the hand-written script |",
        "|---|---|---:|---:|",
    ]
    for name in names:
        per_round = ", ".join(f"{v:.0f}" for v in peaks[name])
        lines.append(f"| {name} | {per_round} | {median[name]:.0f} | {median[name] / median[hand_name]:.2f} |")
    lines += [
        "",
        f"`vaeflows train` peaks at **{median[this_name] / median[hand_name]:.2f}x** the hand-written script.",
    ]
    if phases is not None:
        lines += [
            "",
            "## Where the memory goes (`--phases`)",
            "",
            "`vaeflows train` (same flags) in an instrumented child: its resident set after each phase and the "
            "peak within it (the peak is reset before each phase). Then the importance-sampled NLL of the "
            "trained model on the first test points, by the reference computation and by the row-blocked one.",
            "",
            "| phase | RSS after (MB) | peak within the phase (MB) |",
            "|---|---:|---:|",
        ]
        for row in phases["marks"]:
            if not row["phase"].startswith("("):
                lines.append(f"| {row['phase']} | {row['rss']:.0f} | {row['peak']:.0f} |")
        loaded = ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in phases["modules"].items())
        lines += ["", f"Optional modules imported by the command: {loaded}."]
    text = write_markdown(lines, args.out)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
