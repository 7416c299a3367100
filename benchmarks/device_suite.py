"""Every GPU measurement of the project in one command that finishes in at most 8 minutes on an H100/H200.

Parts, in this order, each a child process with its own time budget (seconds on a GPU; a part that
fails, crashes or runs out of its budget is recorded as such and the suite goes on, so one lent GPU
needs no second try):

============================  =====  ==========================================================
part                          secs   what it runs / writes (``<d>`` = ``cuda``, or ``cpu`` in a dry run)
============================  =====  ==========================================================
``tests``                     60     the CUDA tests (those that skip without CUDA) and the
                                     gated-conv, posterior-flow and device tests:
                                     ``tests_<d>.md``
``step_time_mlp``             75     ``step_time.py``, MLP, every flow but FFJORD:
                                     ``step_time_<d>_mlp.md``
``step_time_gated_conv``      75     the same, gated-conv: ``step_time_<d>_gated_conv.md``
``epoch_throughput``          40     ``epoch_throughput.py`` (gated-conv H-SNF against the measured
                                     matmul rate): ``epoch_throughput_<d>.md``
``nll_throughput``            40     ``nll_throughput.py`` (S = 5000): ``nll_throughput_<d>.md``
``paper_protocol``            90     ``vaeflows train`` of the paper's gated-conv H-SNF model, one
                                     epoch, then a second invocation that resumes the run for a
                                     second epoch and scores the test set (-ELBO, NLL with 100
                                     samples): ``paper_protocol_<d>.md``
``peers``                     60     ``peers.py`` (vaeflows against Pyro, zuko, normflows):
                                     ``peers_<d>.md``
``step_time_ffjord``          40     ``step_time.py`` for FFJORD (MLP and gated-conv; needs
                                     torchdiffeq): ``step_time_<d>_ffjord.md``
============================  =====  ==========================================================

The suite stops starting parts after ``--total`` seconds (470) and gives each part at most what is
left. It writes ``device_suite_<d>.md``: the device (``torch.cuda.get_device_name``), the command,
and every part's status (``ok``, ``failed (exit N)``, ``timed out``, ``skipped: <package> missing``),
seconds and output file, with the end of the log of each part that did not succeed. Logs go to
``<out-dir>/device_suite_logs/``; ``--archive FILE.tar.gz`` packs every file written (a lent
machine hands back at most 8 files).

``--dry-run`` runs the same parts, the same scripts and the same checks on the CPU at tiny sizes,
on a 1000/100/100-image cut of binarized MNIST (in the same ``.npz`` layout) and with one thread per
child process (about a minute of CPU), writing into a temporary folder (or ``--out-dir``): the test
suite runs it, so the suite is known to work before a GPU is seen.

Preparation (the GPU machine has torch and numpy but not pyro, tqdm, pytest, zuko or normflows, and
reaches no package registry or the shared data). Here, in the repository root, once::

    python benchmarks/device_suite.py --prepare

which does what these lines do (all of it is git-ignored)::

    mkdir -p .whl .data/binarized_mnist
    cp ../shared/wheels/*.whl .whl/
    python -m pip wheel --no-deps -w .whl tqdm pytest pluggy iniconfig packaging pygments \\
        zuko normflows opt_einsum torchdiffeq        # the versions installed here, pinned
    # (pip wheel, not pip download --only-binary: normflows is an sdist on PyPI, built here)
    cp ../shared/data/binarized_mnist/binarized_mnist.npz .data/binarized_mnist/

Then, on the GPU machine (carry ``.whl`` and ``.data``), one command::

    python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl && \\
        export PYTHONPATH=$PWD/.site:$PWD; python3 benchmarks/device_suite.py --archive $OUT/device_suite.tar.gz

and here, with the archive back, ``tar -xzf device_suite.tar.gz -C benchmarks/results --wildcards
'*_cuda.md'`` (the logs stay in the archive). A part whose package is missing there records
``skipped: <package> missing`` instead of crashing.

Example:
    python benchmarks/device_suite.py --dry-run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

# Only the standard library at import time (and torch, guarded): the GPU machine may lack pyro,
# and the suite must still run and say so.

__all__ = ["Part", "PARTS", "prepare", "run_suite", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCAL_DATA = ROOT / ".data"
SHARED = ROOT.parent / "shared"
#: Packages the GPU machine lacks that the suite ships as wheels (besides ../shared/wheels: pyro).
WHEELS = ("tqdm", "pytest", "pluggy", "iniconfig", "packaging", "pygments", "zuko", "normflows", "opt_einsum")
WHEELS_OPTIONAL = ("torchdiffeq",)
TOTAL_SECONDS = 470
#: A dry run checks the path, not the speed: on a loaded CI machine its parts get more time.
DRY_BUDGET_FACTOR = 4
#: The posterior flows of ``step_time``'s two main parts, where ``vaeflows.transforms`` cannot be
#: imported (no pyro: those parts are skipped anyway); else :func:`_flows_but_ffjord` reads the registry.
FLOWS_FALLBACK = (
    "planar,radial,iaf,sylvester-orthogonal,sylvester-householder,sylvester-triangular,householder,"
    "residual,spline-autoregressive,spline-coupling,cc-liaf"
)


def _flows_but_ffjord() -> str:
    """``none`` and every flow of ``POSTERIOR_FLOWS`` but FFJORD (which has a part of its own)."""
    try:
        from vaeflows.transforms import POSTERIOR_FLOWS
    except ImportError:
        return "none," + FLOWS_FALLBACK
    return ",".join(["none", *(name for name in POSTERIOR_FLOWS if name != "ffjord")])


@dataclass
class Context:
    """What every part's command needs to know."""

    dry: bool
    out_dir: Path
    log_dir: Path
    data_dir: str
    python: str = sys.executable

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def out(self, name: str) -> Path:
        return self.out_dir / f"{name}_{self.device}.md"


@dataclass
class Part:
    """One measurement of the suite.

    Attributes:
        name: its label (and log file name).
        budget: seconds it may take on a GPU (a dry run, :data:`DRY_BUDGET_FACTOR` times as many).
        needs: importable packages it cannot run without (``skipped: <package> missing`` otherwise).
        commands: ``context -> [argv, ...]``, run in turn (the next only if the last succeeded).
        output: ``context -> the results file it writes``.
        finish: ``(context, output lines, commands) -> None``, run after the commands succeeded
            (writes the results file of a part whose commands write none themselves).
        finish_on_failure: run ``finish`` also after a command exits with an error (the tests:
            their failures are the result), not after a timeout.
    """

    name: str
    budget: float
    needs: Tuple[str, ...]
    commands: Callable[[Context], List[List[str]]]
    output: Callable[[Context], Path]
    finish: Optional[Callable[[Context, List[str], List[List[str]]], None]] = None
    finish_on_failure: bool = False
    status: str = field(default="not run", init=False)


def _script(ctx: Context, script: str, *args: str) -> List[str]:
    return [ctx.python, str(HERE / script), *args]


# --- the parts ------------------------------------------------------------------------------------

TEST_FILES = [
    "tests/nn/test_gated_conv.py",
    "tests/transforms/test_posterior_flows.py",
    "tests/infer/test_vae_experiment.py",
]


def _tests(ctx: Context) -> List[List[str]]:
    select = "cuda" if ctx.dry else "cuda or device or gated"
    report = ctx.log_dir / "tests_junit.xml"
    return [
        [ctx.python, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-rs", "-k", select]
        + ["--junitxml", str(report), *TEST_FILES]
    ]


def _tests_finish(ctx: Context, log: List[str], commands: List[List[str]]) -> None:
    summary = next((line for line in reversed(log) if " in " in line and ("passed" in line or "skipped" in line)), "")
    lines = _header(ctx, "The CUDA tests and a selection", "tests") + [
        f"- **Selection**: `{' '.join(TEST_FILES)}` with `-k '{'cuda' if ctx.dry else 'cuda or device or gated'}'`.",
        f"- **Result**: {summary.strip('= ') or 'see the log below'}.",
        "",
        "```",
        *log[-40:],
        "```",
    ]
    _write(lines, ctx.out("tests"))


def _step_time(arch: str, flows: Optional[str], dry_flows: str, suffix: str, rounds: str = "10", block: str = "10"):
    """``step_time.py`` on ``arch`` for ``flows`` (``None``: every flow but FFJORD)."""

    def commands(ctx: Context) -> List[List[str]]:
        if ctx.dry:
            sizes = ["--rounds", "1", "--block", "1", "--latent-dim", "4", "--batch-size", "10", "--num-flows", "1"]
            sizes += ["--flows", dry_flows]
        else:
            sizes = ["--rounds", rounds, "--block", block, "--flows", flows or _flows_but_ffjord()]
        archs = "mlp" if ctx.dry and suffix == "ffjord" else arch  # FFJORD's gated-conv step: seconds on a CPU
        out = _step_time_output(suffix)(ctx)
        argv = ["--data-dir", ctx.data_dir, "--device", ctx.device, "--archs", archs, *sizes, "--out", str(out)]
        return [_script(ctx, "step_time.py", *argv)]

    return commands


def _step_time_output(suffix: str) -> Callable[[Context], Path]:
    return lambda ctx: ctx.out_dir / f"step_time_{ctx.device}_{suffix}.md"


def _epoch(ctx: Context) -> List[List[str]]:
    sizes = ["--arch", "mlp", "--latent-dim", "4", "--steps", "2", "--block", "1", "--matmul-size", "256"]
    sizes += ["--batch-size", "10"]
    if not ctx.dry:
        sizes = ["--steps", "100", "--block", "20"]
    return [
        _script(ctx, "epoch_throughput.py", "--data-dir", ctx.data_dir, "--device", ctx.device, *sizes)
        + ["--out", str(ctx.out("epoch_throughput"))]
    ]


def _nll(ctx: Context) -> List[List[str]]:
    if ctx.dry:
        sizes = ["--flow", "planar", "--latent-dim", "4", "--points", "2", "--samples", "20", "--chunk-size", "10"]
        sizes += ["--batch-size", "2", "--loop-samples", "2", "--repeats", "1"]
    else:
        sizes = ["--points", "100", "--samples", "5000", "--chunk-size", "1000", "--batch-size", "20"]
    return [
        _script(ctx, "nll_throughput.py", "--data-dir", ctx.data_dir, "--device", ctx.device, *sizes)
        + ["--out", str(ctx.out("nll_throughput"))]
    ]


def _run_dir(ctx: Context) -> Path:
    return ctx.log_dir / "paper_protocol_run"


def _paper(ctx: Context) -> List[List[str]]:
    run = _run_dir(ctx)
    shutil.rmtree(run, ignore_errors=True)
    model = ["--dataset", "binarized-mnist", "--data-dir", ctx.data_dir]
    if ctx.dry:
        model += ["--arch", "mlp", "--latent-dim", "4", "--num-flows", "2"]
        samples = "5"
    else:
        model += ["--arch", "gated-conv", "--latent-dim", "64", "--num-flows", "4"]
        samples = "100"
    train = [ctx.python, "-m", "vaeflows.cli", "train", *model, "--flow", "sylvester-householder", "--warmup", "100"]
    train += ["--device", ctx.device, "--no-progress", "--out", str(run)]
    # The second invocation resumes the run and, at its end, scores the test set (-ELBO and NLL).
    return [train + ["--epochs", "1", "--nll-samples", "0"], train + ["--epochs", "2", "--nll-samples", samples]]


def _paper_finish(ctx: Context, log: List[str], commands: List[List[str]]) -> None:
    import json

    metrics = json.loads((_run_dir(ctx) / "metrics.json").read_text())
    history = metrics["epochs"]
    resumed = any(line.startswith("resumed ") for line in log)
    lines = _header(ctx, "A resumable run of the paper protocol (gated-conv H-SNF)", "paper_protocol") + [
        f"- **Protocol**: `vaeflows train` with {metrics['model']} on {metrics['dataset']}, "
        "KL warm-up over 100 epochs, Adamax; one invocation with `--epochs 1`, a second with "
        "`--epochs 2` on the same run directory (it resumes: model, optimizer and RNG from the "
        f"checkpoint) and then scores the test set, its NLL with {metrics.get('nll_samples', '?')} importance "
        "samples per image.",
        f"- **Resumed**: the second invocation {'resumed the run' if resumed else '**did not say it resumed**'}; "
        f"{len(history)} epochs in the record "
        f"({'as expected' if len(history) == 2 else '**not 2: the resume failed**'}).",
        "",
        "| epoch | train loss (warm-up weighted) | valid -ELBO | seconds |",
        "|---:|---:|---:|---:|",
    ]
    for row in history:
        lines.append(
            f"| {row.get('epoch', '?')} | {_fmt(row.get('train_loss', row.get('train')))} | "
            f"{_fmt(row.get('valid_loss', row.get('valid')))} | {_fmt(row.get('seconds'))} |"
        )
    lines += [
        "",
        f"Test -ELBO {_fmt(metrics.get('test_elbo'))} nats, test NLL {_fmt(metrics.get('test_nll'))} nats "
        f"(best epoch {metrics.get('best_epoch')}), device {metrics.get('device')}. Two epochs of a "
        "2000-epoch protocol: far from the paper.",
        "",
        "Commands:",
        "",
        "```",
        *(" ".join(["python", *map(shlex.quote, argv[1:])]) for argv in commands),
        "```",
    ]
    _write(lines, ctx.out("paper_protocol"))


def _peers(ctx: Context) -> List[List[str]]:
    sizes = ["--steps", "2", "--block", "1", "--latent-dim", "4", "--test-points", "200", "--batch-size", "10"]
    sizes += ["--flows", "planar,iaf-affine"]
    if not ctx.dry:
        sizes = ["--steps", "500", "--block", "25"]
    return [
        _script(ctx, "peers.py", "--data-dir", ctx.data_dir, "--device", ctx.device, *sizes)
        + ["--out", str(ctx.out("peers"))]
    ]


PARTS: List[Part] = [
    Part("tests", 60, ("pyro", "pytest"), _tests, lambda ctx: ctx.out("tests"), _tests_finish, finish_on_failure=True),
    Part(
        "step_time_mlp",
        75,
        ("pyro",),
        _step_time("mlp", None, "none,planar", "mlp"),
        _step_time_output("mlp"),
    ),
    Part(
        "step_time_gated_conv",
        75,
        ("pyro",),
        _step_time("gated-conv", None, "none", "gated_conv"),
        _step_time_output("gated_conv"),
    ),
    Part("epoch_throughput", 40, ("pyro",), _epoch, lambda ctx: ctx.out("epoch_throughput")),
    Part("nll_throughput", 40, ("pyro",), _nll, lambda ctx: ctx.out("nll_throughput")),
    Part("paper_protocol", 90, ("pyro", "tqdm"), _paper, lambda ctx: ctx.out("paper_protocol"), _paper_finish),
    Part("peers", 60, ("pyro",), _peers, lambda ctx: ctx.out("peers")),
    Part(
        "step_time_ffjord",
        40,
        ("pyro", "torchdiffeq"),
        _step_time("mlp,gated-conv", "ffjord", "ffjord", "ffjord", rounds="3", block="3"),
        _step_time_output("ffjord"),
    ),
]


# --- running them ---------------------------------------------------------------------------------


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def _device_line(dry: bool) -> str:
    try:
        import torch
    except ImportError:
        return "torch missing"
    if torch.cuda.is_available():
        gpu = f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        gpu = "no GPU visible"
    used = "the CPU (dry run)" if dry else f"CUDA: {gpu}"
    return f"{used}; {gpu}; torch {torch.__version__}, Python {platform.python_version()}, nproc {os.cpu_count()}"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


_SUITE_COMMAND: List[str] = []


def _header(ctx: Context, title: str, part: str) -> List[str]:
    device = _device_line(ctx.dry).split(";")[0]
    return [
        f"# {title} ({device})",
        "",
        f"Written by `benchmarks/device_suite.py` (part `{part}`) on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"- **Command**: `{' '.join(['python', 'benchmarks/device_suite.py', *map(shlex.quote, _SUITE_COMMAND)])}`",
        f"- **Code**: commit {_commit()}.",
        f"- **Machine**: {_device_line(ctx.dry)}.",
    ]


def _write(lines: List[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _missing(packages: Tuple[str, ...]) -> Optional[str]:
    for package in packages:
        if importlib.util.find_spec(package) is None:
            return package
    return None


def _run(argv: List[str], timeout: float, env: Dict[str, str], log) -> Tuple[Optional[int], List[str]]:
    """Run ``argv`` in its own process group; ``(exit code or None if it timed out, output lines)``."""
    log.write(f"$ {' '.join(shlex.quote(a) for a in argv)}\n")
    log.flush()
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=max(timeout, 1))
        code: Optional[int] = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    log.write(output)
    log.flush()
    return code, output.splitlines()


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(ctx: Context, parts: List[Part], total: float, echo: Callable[[str], None] = print) -> List[dict]:
    """Run ``parts`` in turn within ``total`` seconds; one record per part."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["VAEFLOWS_DATA_DIR"] = ctx.data_dir
    if ctx.dry:  # one thread per child: a small shared CPU is many times slower with more
        env["OMP_NUM_THREADS"] = "1"
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + total
    records = []
    for part in parts:
        start = time.monotonic()
        left = deadline - start
        record = {"part": part, "seconds": 0.0, "output": part.output(ctx), "tail": [], "budget": 0.0}
        cpu_before = _children_cpu()
        missing = _missing(part.needs)
        if missing:
            part.status = f"skipped: {missing} missing"
        elif left < 5:
            part.status = "skipped: the suite's time was spent"
        else:
            timeout = min(part.budget * (DRY_BUDGET_FACTOR if ctx.dry else 1), left)
            record["budget"] = timeout
            echo(f"[device_suite] {part.name}: starting (at most {timeout:.0f} s)")
            commands = part.commands(ctx)
            lines: List[str] = []
            code: Optional[int] = 0
            with open(ctx.log_dir / f"{part.name}.log", "w") as log:
                for argv in commands:
                    code, out = _run(argv, timeout - (time.monotonic() - start), env, log)
                    lines += out
                    if code != 0:
                        break
            if code is None:
                part.status = f"timed out after {timeout:.0f} s"
            elif code:
                part.status = f"failed (exit {code})"
            else:
                part.status = "ok"
            if code == 0 or code is not None and part.finish_on_failure:
                try:
                    if part.finish is not None:
                        part.finish(ctx, lines, commands)
                    if not record["output"].exists():
                        part.status = "failed: no results file"
                except Exception as error:  # noqa: BLE001  # recorded, and the suite goes on
                    part.status = f"failed: {type(error).__name__}: {error}"
            if part.status != "ok":
                record["tail"] = lines[-25:]
        record["seconds"] = time.monotonic() - start
        record["cpu_seconds"] = _children_cpu() - cpu_before
        echo(f"[device_suite] {part.name}: {part.status} ({record['seconds']:.0f} s)")
        records.append(record)
    return records


def write_summary(ctx: Context, records: List[dict], total: float) -> Path:
    lines = _header(ctx, "The device suite", "summary") + [
        f"- **Budget**: {total:.0f} s for the whole suite; each part at most its own budget"
        f"{f' (x{DRY_BUDGET_FACTOR} in a dry run)' if ctx.dry else ''} and what was left.",
        "",
        "| part | status | seconds | CPU seconds | budget | results |",
        "|---|---|---:|---:|---:|---|",
    ]
    for record in records:
        part = record["part"]
        output = record["output"]
        shown = f"`{output.name}`" if output.exists() else "—"
        lines.append(
            f"| {part.name} | {part.status} | {record['seconds']:.0f} | {record.get('cpu_seconds', 0):.0f} | "
            f"{record['budget']:.0f} | {shown} |"
        )
    for record in records:
        if record["tail"]:
            lines += ["", f"## {record['part'].name}: the end of its log", "", "```", *record["tail"], "```"]
    path = ctx.out("device_suite")
    _write(lines, path)
    return path


#: Images per split of the dry run's cut of binarized MNIST (train, valid, test).
DRY_DATA_SIZES = {"train": 1000, "valid": 100, "test": 100}


def dry_data(folder: Path, source: str) -> str:
    """A cut of ``source``'s ``binarized_mnist.npz`` (:data:`DRY_DATA_SIZES`) under ``folder``, in the
    same layout and format: the dry run's scripts load it in milliseconds instead of seconds."""
    import numpy as np

    target = folder / "binarized_mnist"
    target.mkdir(parents=True, exist_ok=True)
    with np.load(Path(source) / "binarized_mnist" / "binarized_mnist.npz") as full:
        np.savez_compressed(target / "binarized_mnist.npz", **{k: full[k][:n] for k, n in DRY_DATA_SIZES.items()})
    return str(folder)


def prepare(echo: Callable[[str], None] = print) -> int:
    """Fill ``.whl/`` (the wheels the GPU machine lacks, at the versions installed here) and ``.data/``."""
    from importlib.metadata import PackageNotFoundError, version

    wheels = ROOT / ".whl"
    wheels.mkdir(exist_ok=True)
    for wheel in sorted((SHARED / "wheels").glob("*.whl")):
        shutil.copy2(wheel, wheels / wheel.name)
    pins = []
    for name in WHEELS + WHEELS_OPTIONAL:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name in WHEELS:
                echo(f"{name} is not installed here; downloading its newest version")
                pins.append(name)
    # `pip wheel` takes a package's wheel where it has one and builds one from its sdist otherwise (normflows).
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels)]
    code = subprocess.run(argv + pins).returncode
    data = LOCAL_DATA / "binarized_mnist"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SHARED / "data" / "binarized_mnist" / "binarized_mnist.npz", data / "binarized_mnist.npz")
    echo(f"{wheels}: {', '.join(sorted(p.name for p in wheels.glob('*.whl')))}")
    echo(f"{data}: binarized_mnist.npz")
    return code


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same parts on the CPU at tiny sizes")
    parser.add_argument("--prepare", action="store_true", help="fill .whl/ and .data/ here (needs pip's network)")
    parser.add_argument("--parts", help=f"comma-separated subset of: {', '.join(p.name for p in PARTS)}")
    parser.add_argument(
        "--data-dir", help="default: .data/ if it holds the data, else $VAEFLOWS_DATA_DIR or ../shared/data"
    )
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results (a temporary folder with --dry-run)")
    parser.add_argument(
        "--total", type=float, help=f"seconds for the whole suite (default {TOTAL_SECONDS}; x{DRY_BUDGET_FACTOR} dry)"
    )
    parser.add_argument("--archive", type=Path, help="also pack every file written into this .tar.gz")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare()
    _SUITE_COMMAND[:] = argv
    if args.total is None:
        args.total = TOTAL_SECONDS * (DRY_BUDGET_FACTOR if args.dry_run else 1)
    parts = PARTS
    if args.parts:
        names = [n for n in args.parts.split(",") if n]
        unknown = [n for n in names if n not in {p.name for p in PARTS}]
        if unknown:
            parser.error(f"--parts: unknown part(s) {', '.join(unknown)}; known: {', '.join(p.name for p in PARTS)}")
        parts = [p for p in PARTS if p.name in names]
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = (
            str(LOCAL_DATA)
            if (LOCAL_DATA / "binarized_mnist").is_dir()
            else os.environ.get("VAEFLOWS_DATA_DIR", str(SHARED / "data"))
        )
    if not args.dry_run:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
        if not cuda:
            parser.error("no CUDA device is visible: run it on a GPU, or pass --dry-run for the CPU check")
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="device_suite_")) if args.dry_run else HERE / "results")
    if args.dry_run and args.data_dir is None:
        data_dir = dry_data(out_dir / "device_suite_logs" / "data", data_dir)
    ctx = Context(dry=args.dry_run, out_dir=out_dir, log_dir=out_dir / "device_suite_logs", data_dir=data_dir)
    print(f"[device_suite] {_device_line(ctx.dry)}; results into {out_dir}")
    records = run_suite(ctx, parts, args.total)
    summary = write_summary(ctx, records, args.total)
    print(summary.read_text())
    if args.archive:
        args.archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.archive, "w:gz") as archive:
            for path in [summary] + [r["output"] for r in records if r["output"].exists()]:
                archive.add(path, arcname=path.name)
            archive.add(ctx.log_dir, arcname=ctx.log_dir.name, filter=_no_run_dirs)
        print(f"[device_suite] packed into {args.archive}")
    return 0


def _no_run_dirs(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    """Leave the run directory's checkpoints out of the archive (its metrics.json stays)."""
    if "paper_protocol_run" in info.name and info.isfile() and not info.name.endswith((".json", ".png")):
        return None
    return info


if __name__ == "__main__":
    sys.exit(main())
