"""The speed benchmarks run, and their built-in checks hold, at a tiny budget (the figures are not checked)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_step_time_checks_both_steps_compute_the_same_loss(tmp_path):
    """step_time refuses to time two steps whose losses differ; here it must find them equal."""
    out = tmp_path / "step_time.md"
    step_time = _load("step_time")
    argv = [
        "--data-dir",
        str(DATA),
        "--archs",
        "mlp",
        "--flows",
        "none,planar,sylvester-orthogonal",
        "--latent-dim",
        "8",
        "--rounds",
        "1",
        "--block",
        "2",
        "--during-warmup",
        "--out",
        str(out),
    ]
    assert step_time.main(argv) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| mlp |")]
    assert len(rows) == 3


def test_step_time_refuses_steps_that_compute_different_losses(monkeypatch):
    step_time = _load("step_time")
    monkeypatch.setattr(step_time, "handwritten_loss", lambda vae, x, beta: step_time.F.softplus(vae.loc.bias).sum())
    with pytest.raises(RuntimeError, match="different losses"):
        step_time.main(
            [
                "--data-dir",
                str(DATA),
                "--archs",
                "mlp",
                "--flows",
                "none",
                "--latent-dim",
                "4",
                "--rounds",
                "1",
                "--block",
                "1",
            ]
        )


def test_bootstrap_interval_brackets_the_median_and_narrows_with_more_rounds():
    step_time = _load("step_time")
    few = [1.00, 1.10, 1.02, 1.06, 0.98]
    low, high = step_time.bootstrap_interval(few)
    assert min(few) <= low <= 1.02 <= high <= max(few)
    many = few * 20
    low_many, high_many = step_time.bootstrap_interval(many)
    assert low <= low_many <= 1.02 <= high_many <= high and high_many - low_many < high - low
    assert step_time.bootstrap_interval(few) == (low, high)  # seeded


def test_nll_throughput_runs(tmp_path):
    out = tmp_path / "nll.md"
    nll = _load("nll_throughput")
    argv = [
        "--data-dir",
        str(DATA),
        "--flow",
        "planar",
        "--latent-dim",
        "4",
        "--points",
        "2",
        "--samples",
        "20",
        "--chunk-size",
        "10",
        "--batch-size",
        "2",
        "--loop-samples",
        "2",
        "--out",
        str(out),
    ]
    assert nll.main(argv) == 0
    assert "points / s" in out.read_text()


def test_epoch_throughput_runs(tmp_path):
    out = tmp_path / "epoch.md"
    epoch = _load("epoch_throughput")
    argv = [
        "--data-dir",
        str(DATA),
        "--arch",
        "mlp",
        "--flow",
        "planar",
        "--latent-dim",
        "4",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--block",
        "1",
        "--matmul-size",
        "256",
        "--out",
        str(out),
    ]
    assert epoch.main(argv) == 0
    assert "GFLOP" in out.read_text()


def _table_rows(text: str, model: str):
    """The data rows of ``model``'s table in a pyro_guides results file: guide name -> cells."""
    section = text.split(f"\n## {model}\n", 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| guide |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_pyro_guides_quick_writes_every_guide_with_finite_numbers(tmp_path):
    """Every guide of the benchmark (zuko's only where zuko is installed) builds, trains and is scored."""
    out = tmp_path / "pyro_guides.md"
    pyro_guides = _load("pyro_guides")
    assert pyro_guides.main(["--quick", "--models", "banana", "--out", str(out)]) == 0
    rows = _table_rows(out.read_text(), "banana")
    expected = [spec.name for spec in pyro_guides.guide_specs(pyro_guides.zuko_available())]
    assert list(rows) == expected
    assert any(name.startswith("AutoFlow ") for name in rows) and "AutoIAFNormal" in rows
    for name, cells in rows.items():
        elbo = float(cells[2].strip("*").split(" +- ")[0])
        ratio = float(cells[6].split(" ")[0])
        assert math.isfinite(elbo) and ratio > 0, (name, cells)


def test_pyro_guides_selects_and_excludes_guides_by_whole_name(tmp_path):
    """Guide names hold commas ("AutoFlow iaf, full base"): --guides and --exclude take whole names."""
    out = tmp_path / "pyro_guides.md"
    pyro_guides = _load("pyro_guides")
    argv = ["--quick", "--models", "banana", "--out", str(out), "--guides", "AutoFlow iaf, full base", "AutoFlow iaf"]
    assert pyro_guides.main([*argv, "--exclude", "AutoFlow iaf"]) == 0
    assert list(_table_rows(out.read_text(), "banana")) == ["AutoIAFNormal", "AutoFlow iaf, full base"]
    for bad in (["--exclude", "AutoIAFNormal"], ["--exclude", "AutoFlow iaff"]):
        with pytest.raises(SystemExit):
            pyro_guides.main(["--quick", "--out", str(out), *bad])


def test_pyro_guides_without_zuko_skips_its_rows_and_says_how_to_install_it(tmp_path, monkeypatch):
    out = tmp_path / "pyro_guides.md"
    pyro_guides = _load("pyro_guides")
    monkeypatch.setattr(pyro_guides, "zuko_available", lambda: False)
    argv = ["--quick", "--models", "banana", "--guides", "AutoDiagonalNormal", "--out", str(out)]
    assert pyro_guides.main(argv) == 0
    text = out.read_text()
    assert "pip install -e '.[bench]'" in text
    assert list(_table_rows(text, "banana")) == ["AutoDiagonalNormal", "AutoIAFNormal"]
    with pytest.raises(SystemExit):
        pyro_guides.main(["--quick", "--guides", "zuko MAF (ZukoToPyro)", "--out", str(out)])


def test_priors_benchmark_trains_every_prior_at_one_budget(tmp_path, monkeypatch):
    """benchmarks/priors.py at a tiny budget on the bundled digits: a row per learned prior (the run
    directories' PNGs, most of the time at this size, are not drawn)."""
    import vaeflows.infer.experiment as experiment

    monkeypatch.setattr(experiment, "_draw", lambda *args, **kwargs: None)
    out = tmp_path / "priors.md"
    priors = _load("priors")
    argv = [
        *("--dataset", "digits", "--priors", "vamp,flow", "--epochs", "1", "--warmup", "1", "--latent-dim", "3"),
        *("--num-pseudo-inputs", "4", "--prior-flow", "realnvp", "--prior-steps", "1", "--nll-samples", "2"),
        *("--out-dir", str(tmp_path / "runs"), "--results", str(out)),
    ]
    assert priors.main(argv) == 0
    rows = [
        line.split(" | ")[0] for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert rows == ["| prior", "| vamp", "| flow"]


def test_memory_measures_both_commands_and_the_phases(tmp_path):
    """memory.py runs both commands on a 100-image cut of the .npz and the instrumented child."""
    out = tmp_path / "memory.md"
    memory = _load("memory")
    argv = ["--data-dir", str(DATA), "--subset", "100", "--rounds", "1", "--phases"]
    argv += ["--nll-points", "2", "--nll-samples", "20", "--out", str(out)]
    assert memory.main(argv) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "MB" not in line]
    assert any(line.startswith("| hand-written") for line in rows) and any("vaeflows train" in r for r in rows)
    assert "| load the data set |" in text and "row-blocked" in text


def test_density_vs_peer_nsf_suite_writes_every_row(tmp_path):
    pytest.importorskip("zuko")
    pytest.importorskip("normflows")
    density_vs_peer = _load("density_vs_peer")
    out = tmp_path / "nsf.md"
    argv = ["--suite", "nsf", "--iters2d", "2", "--batch2d", "16", "--seeds", "0,1", "--nsf-steps", "1"]
    mnist = ["--data-dir", str(DATA), "--iters-mnist", "2", "--batch-mnist", "4", "--test-images", "8"]
    options = ["--hidden", "4", "--bins", "3", "--nsf-mnist-hidden", "8"]
    assert density_vs_peer.main([*argv, *mnist, *options, "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "|---" not in line]
    rows = [row for row in rows if not row.startswith("| problem")]
    assert len(rows) == 9 and {row.split(" | ")[1] for row in rows[:8]} == {"coupling", "autoregressive"}
    assert rows[8].startswith("| MNIST, coupling") and len(rows[8].split(" | ")) == 10
    assert all("nan" not in row.lower() for row in rows)
