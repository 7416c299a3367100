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


def test_idf_codec_round_trips_every_image_and_writes_the_table(tmp_path, monkeypatch):
    """idf_codec.py at a tiny budget on MNIST (40 validation and test images): one training step, 20
    test images coded and checked."""
    from vaeflows.density import DENSITY_DATASETS, DensityData, load_mnist_8bit

    def small_mnist(data_dir, num_train=16, seed=0):
        full = load_mnist_8bit(data_dir, num_train, seed)
        labels = {split: y[:40] for split, y in full.labels.items()}
        return DensityData(full.train, full.valid[:40], full.test[:40], full.event_shape, True, "mnist", labels, 10)

    monkeypatch.setitem(DENSITY_DATASETS, "mnist", small_mnist)
    out = tmp_path / "idf_codec.md"
    idf_codec = _load("idf_codec")
    argv = ["--data-dir", str(DATA), "--epochs", "1", "--num-train", "16", "--batch-size", "16", "--num-steps", "1"]
    argv += ["--hidden", "4", "--num-test", "20", "--code-batch", "8", "--run-dir", str(tmp_path / "run")]
    assert idf_codec.main([*argv, "--results", str(out)]) == 0
    text = out.read_text()
    assert "20 of 20 decoded bit-exactly" in text
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + 8  # the header and 8 codes


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
    assert len(rows) == 10 and {row.split(" | ")[1] for row in rows[:8]} == {"coupling", "autoregressive"}
    assert [row.split(" | ")[1] for row in rows[8:]] == ["zuko", "normflows"]  # a row per peer, its architecture
    assert all(row.startswith("| MNIST, coupling") and len(row.split(" | ")) == 8 for row in rows[8:])
    assert all("nan" not in row.lower() for row in rows)


def _peer_rows(text: str):
    return [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_peers_trains_vaeflows_and_every_peer_on_each_flow(tmp_path):
    """peers.py at a tiny budget: a row per library and flow, with finite figures."""
    pytest.importorskip("zuko")
    pytest.importorskip("normflows")
    out = tmp_path / "peers.md"
    peers = _load("peers")
    argv = ["--data-dir", str(DATA), "--steps", "2", "--block", "1", "--latent-dim", "4", "--batch-size", "10"]
    assert peers.main([*argv, "--test-points", "20", "--test-batch", "10", "--out", str(out)]) == 0
    text = out.read_text()
    rows = _peer_rows(text)
    assert rows == [
        ["| none", "vaeflows"],
        ["| none", "Pyro"],
        ["| planar", "vaeflows"],
        ["| planar", "Pyro"],
        ["| planar", "normflows"],
        ["| iaf", "vaeflows"],
        ["| iaf", "Pyro"],
        ["| iaf-affine", "vaeflows"],
        ["| iaf-affine", "Pyro"],
        ["| iaf-affine", "zuko"],
        ["| iaf-affine", "normflows"],
        ["| householder", "vaeflows"],
        ["| householder", "Pyro"],
    ]
    for line in text.splitlines():
        if line.startswith("| ") and "---" not in line and "library" not in line:
            elbo = float(line.split(" | ")[5])
            assert math.isfinite(elbo) and elbo > 0, line
    assert "Where vaeflows loses" in text


def test_peers_skips_a_missing_peer_and_says_how_to_install_it(tmp_path, monkeypatch):
    out = tmp_path / "peers.md"
    peers = _load("peers")
    real = peers.peer_missing
    monkeypatch.setattr(peers, "peer_missing", lambda package: real("no_such_package_x") if package == "zuko" else None)
    argv = ["--data-dir", str(DATA), "--flows", "iaf-affine", "--peers", "Pyro,zuko", "--steps", "1", "--block", "1"]
    assert peers.main([*argv, "--latent-dim", "2", "--batch-size", "5", "--test-points", "10", "--out", str(out)]) == 0
    text = out.read_text()
    assert [row[1] for row in _peer_rows(text)] == ["vaeflows", "Pyro"]
    assert "zuko (iaf-affine): skipped: no_such_package_x missing (pip install -e '.[bench]')" in text


def test_device_suite_records_a_missing_package_a_failure_and_a_timeout_and_goes_on(tmp_path):
    """The suite's bookkeeping, with stand-in parts: each outcome is recorded and the next part runs."""
    suite = _load("device_suite")
    py = [sys.executable, "-c"]

    def part(name, needs, code, budget=20):
        return suite.Part(name, budget, needs, lambda ctx: [py + [code]], lambda ctx: tmp_path / f"{name}.md")

    parts = [
        part("missing", ("no_such_package_x",), "pass"),
        part("fails", (), "import sys; print('boom'); sys.exit(3)"),
        part("slow", (), "import time; time.sleep(60)", budget=1),
        part("ok", (), f"open({str(tmp_path / 'ok.md')!r}, 'w').write('x')"),
        part("no_file", (), "pass"),
        part("tests_fail", (), "import sys; sys.exit(1)"),
    ]
    parts[-1].finish = lambda ctx, lines, commands: (tmp_path / "tests_fail.md").write_text("failures listed")
    parts[-1].finish_on_failure = True
    ctx = suite.Context(dry=False, out_dir=tmp_path, log_dir=tmp_path / "logs", data_dir=str(DATA))
    records = suite.run_suite(ctx, parts, total=60, echo=lambda line: None)
    assert [r["part"].status for r in records] == [
        "skipped: no_such_package_x missing",
        "failed (exit 3)",
        "timed out after 1 s",
        "ok",
        "failed: no results file",
        "failed (exit 1)",
    ]
    assert (tmp_path / "tests_fail.md").exists()  # the tests' results are written even when some fail
    assert records[1]["tail"] == ["boom"]  # and the slow part was stopped: its status above says "timed out"
    text = suite.write_summary(ctx, records, 60).read_text()
    assert "| fails | failed (exit 3) |" in text and "## fails: the end of its log" in text


def test_device_suite_dry_run_runs_every_part_on_the_cpu(tmp_path):
    """``device_suite.py --dry-run``: every part of the GPU suite, the same scripts at tiny sizes."""
    suite = _load("device_suite")
    assert suite.main(["--dry-run", "--out-dir", str(tmp_path)]) == 0
    summary = (tmp_path / "device_suite_cpu.md").read_text()
    statuses = {}
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] in {p.name for p in suite.PARTS}:
            statuses[cells[0]] = cells[1]
    assert list(statuses) == [p.name for p in suite.PARTS]
    for name, status in statuses.items():
        assert status == "ok" or status.startswith("skipped: ") and status.endswith(" missing"), (name, status)
    for part in suite.PARTS:
        if statuses[part.name] == "ok":
            assert part.output(suite.Context(True, tmp_path, tmp_path, str(DATA))).exists(), part.name


def test_rezero_bases_benchmark_writes_a_row_per_variant(tmp_path):
    """benchmarks/rezero_bases.py at a tiny budget: every toy variant, and on MNIST (where the
    shared data are there) the baseline, the learned prior and the MADE base."""
    out = tmp_path / "rezero_bases.md"
    bench = _load("rezero_bases")
    argv = [
        *("--datasets", "moons", "--seeds", "1", "--toy-iters", "4", "--toy-steps-per-flow", "2"),
        *("--toy-hidden", "8", "--batch", "16", "--eval-every", "2", "--results", str(out)),
    ]
    mnist = (DATA / "MNIST").exists()
    if mnist:
        argv += ["--data-dir", str(DATA), "--mnist-iters", "2", "--mnist-train", "64", "--mnist-test", "8"]
        argv += ["--mnist-batch", "4", "--mnist-steps-per-level", "1", "--mnist-hidden", "4"]
        argv += ["--mnist-variants", "baseline,learned-prior,made"]
    else:
        argv += ["--mnist-iters", "0"]
    assert bench.main(argv) == 0
    rows = [
        line.split(" | ")[0] for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line
    ]
    expected = ["| variant", "| baseline", "| rezero", "| mixture", "| made"]
    if mnist:
        expected += ["| variant", "| baseline", "| learned-prior", "| made"]
    assert rows == expected


def test_rnode_benchmark_writes_every_variant(tmp_path):
    pytest.importorskip("torchdiffeq")
    rnode = _load("rnode")
    out = tmp_path / "rnode.md"
    argv = ["--iters", "2", "--batch", "16", "--hidden", "4", "--seeds", "0", "--datasets", "moons,rings"]
    assert rnode.main([*argv, "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "|---" not in line][1:]
    assert [row.split(" | ")[1] for row in rows] == ["ml", "rnode", "rnode-rk4", "rnode-rk4-T"] * 2
    assert all("nan" not in row.lower() for row in rows)


def test_flow_matching_benchmark_writes_every_row_and_matches_torchcfm(tmp_path):
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("torchcfm")
    flow_matching = _load("flow_matching")
    out = tmp_path / "fm.md"
    argv = [
        "--datasets",
        "moons",
        "--seeds",
        "0",
        "--budget",
        "0.05",
        "--hidden",
        "4",
        "--batch",
        "16",
        "--nfe-samples",
        "20",
    ]
    assert flow_matching.main([*argv, "--test-points", "20", "--rounds", "2", "--block", "1", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| moons |")]
    assert [row.split(" | ")[1] for row in rows] == list(flow_matching.MODELS)
    assert all("nan" not in row.lower() for row in rows)
    assert text.count("target (<= 20%)") == 2 and "equals the permutation" in text
    table = text.split("| path |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    differences = [float(line.rsplit("|", 2)[1]) for line in table]
    assert len(differences) == 3 and max(differences) < 1e-4  # the same loss as torchcfm's


@pytest.mark.parametrize("field", ["mlp", "conv"])
def test_flow_matching_mnist_writes_both_rows_in_bits_per_dim(tmp_path, field):
    """flow_matching_mnist.py at a tiny budget: both objectives train and are scored in bits/dim,
    with either vector field."""
    pytest.importorskip("torchdiffeq")
    if not (DATA / "MNIST").exists():
        pytest.skip(f"MNIST not under {DATA}")
    bench = _load("flow_matching_mnist")
    out = tmp_path / "fm_mnist.md"
    argv = ["--data-dir", str(DATA), "--budget", "0.05", "--num-train", "32", "--test-points", "4"]
    argv += ["--hidden", "4", "--batch", "4", "--nfe-samples", "2", "--field", field, "--out", str(out)]
    names = ["fm", "ffjord"] + (["rnode", "realnvp", "nsf"] if field == "mlp" else [])
    assert bench.main([*argv, "--models", ",".join(names)]) == 0
    text = out.read_text()
    assert f"field={field!r}" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.split(" | ")[0][2:] in names]
    assert [row[0] for row in rows] == [f"| {name}" for name in names]
    assert all(0 < float(row[1]) < 50 for row in rows)  # bits/dim of 8-bit data: finite and positive
    assert "eval trace: hutchinson" in text and "(target, within 20%:" in text


def test_banana_init_prints_an_elbo_per_seed(capsys):
    banana_init = _load("banana_init")
    assert banana_init.main(["vf_out01", "0", "2", "--steps", "3", "--draws", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["vf_out01", "0"], ["vf_out01", "1"]]
    assert all(math.isfinite(float(line.split()[2])) for line in lines)


def test_nsf_mnist_masks_prints_bits_per_dim(capsys):
    if not (DATA / "MNIST").exists():
        pytest.skip("the shared MNIST files are not here")
    probe = _load("nsf_mnist_masks")
    assert (
        probe.main(
            [
                "halves",
                "3",
                "--iters",
                "1",
                "--batch",
                "4",
                "--hidden",
                "8",
                "--test-images",
                "8",
                "--data-dir",
                str(DATA),
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.splitlines()[-1].split()
    assert last[:3] == ["halves", "3.0", "bits/dim"] and math.isfinite(float(last[3]))
