"""Every flag of the ``vaeflows`` command reaches exactly the option it names (issue 14).

Flag by flag, the command runs in-process with the API function it calls replaced by a recorder;
the recorded arguments then build the model, and the built modules are inspected. A last test
checks that every flag of the parser has a row here, so a new flag joins the table. One real run
checks that ``config.json`` records what was built.
"""

import argparse
import inspect
import json

import pytest
import torch
from torch import nn

import vaeflows.density as density
import vaeflows.infer.experiment as experiment
import vaeflows.report as report
from vaeflows.cli import build_parser, main
from vaeflows.density import CNFBlock, Coupling, SplineCoupling, SplineMAFStep, Squeeze, density_flow
from vaeflows.infer.experiment import load_run
from vaeflows.models import build_vae
from vaeflows.nn import GatedConvEncoder

TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--out"]
DENSITY = ["density", "train", "--flow", "realnvp", "--dataset", "moons", "--out"]
ENERGY = ["density", "energy", "--energy", "U1", "--out"]


def recorded(monkeypatch, module, name, argv, result=None):
    """Run ``main(argv)`` with ``module.name`` replaced by a recorder; its arguments by name."""
    original = getattr(module, name)
    calls = []
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append((a, k)) or result)
    assert main([str(a) for a in argv]) == 0
    ((args, kwargs),) = calls
    return inspect.signature(original).bind(*args, **kwargs).arguments


def vae_of(call, image_shape=(1, 8, 8)):
    return build_vae(image_shape=image_shape, likelihood="bernoulli", **call["model"])


def linear_widths(module):
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def spline_layers(model):
    return [m for m in model.modules() if isinstance(m, (SplineCoupling, SplineMAFStep))]


def cnf_blocks(model):
    return [m for m in model.modules() if isinstance(m, CNFBlock)]


FFJORD = ["--flow", "ffjord", "--solver", "rk4", "--solver-steps", "3"]


# (flags, check of the recorded train_vae arguments); a flag may appear in several rows.
TRAIN_ROWS = {
    "dataset": (["--dataset", "digits"], lambda c: c["dataset"] == "digits"),
    "data-dir": (["--data-dir", "somewhere"], lambda c: c["data_dir"] == "somewhere"),
    "flow": (["--flow", "radial"], lambda c: vae_of(c).flow.name == "radial"),
    "flow-none": ([], lambda c: vae_of(c).flow is None),
    "num-flows": (["--flow", "planar", "--num-flows", "3"], lambda c: vae_of(c).flow.num_flows == 3),
    "latent-dim": (["--latent-dim", "3"], lambda c: vae_of(c).loc.out_features == 3 == vae_of(c).decoder.latent_dim),
    "arch": (["--arch", "gated-conv"], lambda c: isinstance(vae_of(c, (1, 28, 28)).encoder, GatedConvEncoder)),
    "hidden-dims": (
        ["--hidden-dims", "32,16"],
        lambda c: linear_widths(vae_of(c).encoder) == [32, 16] and linear_widths(vae_of(c).decoder)[:2] == [16, 32],
    ),
    "num-ortho-vecs": (
        ["--flow", "sylvester-orthogonal", "--latent-dim", "4", "--num-ortho-vecs", "3"],
        lambda c: vae_of(c).flow.family.param_shapes["q"] == (4, 3),
    ),
    "num-householder": (
        ["--flow", "householder", "--num-householder", "3"],
        lambda c: vae_of(c).flow.family.param_shapes["v"][0] == 3,
    ),
    "num-householder-hsnf": (
        ["--flow", "sylvester-householder", "--num-householder", "2"],
        lambda c: vae_of(c).flow.family.param_shapes["v"][0] == 2,
    ),
    # issue 14, defect 1: the IAF's MADEs, not the encoder, and no TypeError with gated-conv
    "iaf-hidden": (
        ["--flow", "iaf", "--latent-dim", "4", "--iaf-hidden", "8,9"],
        lambda c: (
            [linear_widths(m)[:2] for m in vae_of(c).flow.mades] == [[8, 9]] * 4
            and linear_widths(vae_of(c).encoder) == [300, 300]
        ),
    ),
    "iaf-hidden-gated": (
        ["--arch", "gated-conv", "--flow", "iaf", "--latent-dim", "4", "--iaf-hidden", "8"],
        lambda c: linear_widths(vae_of(c, (1, 28, 28)).flow.mades[0])[0] == 8,
    ),
    "kinetic": (
        [*FFJORD, "--kinetic", "0.5"],
        lambda c: vae_of(c).flow.solve_options["kinetic_weight"] == 0.5,
    ),
    "jacobian-frobenius": (
        [*FFJORD, "--jacobian-frobenius", "0.25"],
        lambda c: vae_of(c).flow.solve_options["jacobian_weight"] == 0.25,
    ),
    "solver": (
        [*FFJORD],
        lambda c: vae_of(c).flow.solve_options["method"] == "rk4" and vae_of(c).flow.solve_options["solver_steps"] == 3,
    ),
    "learn-time": (
        [*FFJORD, "--learn-time"],
        lambda c: all(time.learn for time in vae_of(c).flow.times) and len(vae_of(c).flow.times) == 4,
    ),
    "learn-time-default": (FFJORD, lambda c: "learn_time" not in c["model"]),
    "epochs": (["--epochs", "3"], lambda c: c["config"].epochs == 3),
    "warmup": (["--warmup", "0"], lambda c: c["config"].warmup == 0),
    "patience": (["--patience", "7"], lambda c: c["config"].patience == 7),
    "batch-size": (["--batch-size", "32"], lambda c: c["config"].batch_size == 32),
    "lr": (["--lr", "0.01"], lambda c: c["config"].lr == 0.01),
    "optimizer": (["--optimizer", "adam"], lambda c: c["config"].optimizer == "adam"),
    "clip-norm": (["--clip-norm", "2.5"], lambda c: c["config"].clip_norm == 2.5),
    "seed": (["--seed", "4"], lambda c: c["config"].seed == 4),
    "objective": (
        ["--objective", "iwae", "--iwae-samples", "3"],
        lambda c: c["objective"] == "iwae" and c["iwae_samples"] == 3,
    ),
    "iwae-samples-default": (["--objective", "iwae"], lambda c: c["iwae_samples"] == 1),
    "nll-samples": (["--nll-samples", "7"], lambda c: c["nll_samples"] == 7),
    "device": (["--device", "cpu"], lambda c: c["device"] == "cpu"),
    "no-progress": (["--no-progress"], lambda c: c["progress"] is False),
    "allow-changes": (["--allow-changes"], lambda c: c["allow_changes"] is True),
    "log": (["--log", "csv", "tensorboard"], lambda c: list(c["logs"]) == ["csv", "tensorboard"]),
    "log-default": ([], lambda c: list(c.get("logs", [])) == []),
    "out": ([], lambda c: c["run_dir"].name == "run"),
    "prior-standard": ([], lambda c: "prior" not in c["model"] and vae_of(c).latent_prior is None),
    "prior": (["--prior", "vamp"], lambda c: vae_of(c).latent_prior.num_components == 500),
    "num-pseudo-inputs": (
        ["--prior", "vamp", "--num-pseudo-inputs", "7"],
        lambda c: (
            vae_of(c).latent_prior.weight.shape == (7, 64) and vae_of(c).prior(torch.zeros(1)).loc.shape == (7, 64)
        ),
    ),
    "prior-flow": (
        ["--prior", "flow", "--prior-flow", "realnvp"],
        lambda c: (
            vae_of(c).latent_prior.density.name == "realnvp" and vae_of(c).latent_prior.density.event_shape == (64,)
        ),
    ),
    "prior-flow-default": (["--prior", "flow"], lambda c: vae_of(c).latent_prior.density.name == "maf"),
    "prior-steps": (
        ["--prior", "flow", "--prior-flow", "nice", "--prior-steps", "3"],
        lambda c: sum(type(m) is Coupling for m in vae_of(c).latent_prior.modules()) == 3,
    ),
    "prior-hidden": (
        ["--prior", "flow", "--prior-flow", "nice", "--prior-steps", "1", "--prior-hidden", "9"],
        lambda c: 9 in linear_widths(vae_of(c).latent_prior),
    ),
}


@pytest.mark.parametrize("flags, check", TRAIN_ROWS.values(), ids=TRAIN_ROWS.keys())
def test_train_flag(monkeypatch, tmp_path, flags, check):
    call = recorded(monkeypatch, experiment, "train_vae", [*TRAIN, tmp_path / "run", *flags])
    assert check(call), call
    assert not (tmp_path / "run").exists()


DENSITY_ROWS = {
    "flow": (["--flow", "maf", "--hidden", "8"], lambda c, m: m.name == "maf"),
    "dataset": (["--dataset", "rings"], lambda c, m: c["dataset"] == "rings"),
    "data-dir": (["--data-dir", "somewhere"], lambda c, m: c["data_dir"] == "somewhere"),
    "num-steps": (["--num-steps", "3"], lambda c, m: sum(isinstance(x, Coupling) for x in m.modules()) == 3),
    "hidden": (["--hidden", "12"], lambda c, m: linear_widths(m)[0] == 12),
    "num-levels": (["--flow", "glow", "--num-levels", "3"], lambda c, m: c["options"]["num_levels"] == 3),
    "num-levels-nsf": (
        ["--flow", "nsf", "--num-levels", "2", "--hidden", "4"],
        lambda c, m: sum(type(x) is Squeeze for x in m.modules()) == 1 and m.unit_interval,
    ),
    "transform": (
        ["--flow", "nsf", "--transform", "autoregressive"],
        lambda c, m: sum(isinstance(x, SplineMAFStep) for x in m.modules()) == 4,
    ),
    "transform-default": (["--flow", "nsf"], lambda c, m: sum(isinstance(x, SplineCoupling) for x in m.modules()) == 4),
    "bins": (["--flow", "nsf", "--bins", "5"], lambda c, m: {x.bins for x in spline_layers(m)} == {5}),
    "conditioner": (
        ["--flow", "nsf", "--conditioner", "resnet", "--num-blocks", "3"],
        lambda c, m: [len(x.net.blocks) for x in spline_layers(m)] == [3] * 4,
    ),
    "num-blocks": (
        ["--flow", "nsf", "--conditioner", "resnet", "--num-blocks", "1"],
        lambda c, m: [len(x.net.blocks) for x in spline_layers(m)] == [1] * 4,
    ),
    "unconditional": (
        ["--flow", "nsf", "--unconditional"],
        lambda c, m: [x.unconditional for x in spline_layers(m)] == [True] * 4,
    ),
    "tail-bound": (
        ["--flow", "nsf", "--tail-bound", "2.5"],
        lambda c, m: {x.tail_bound for x in spline_layers(m)} == {2.5},
    ),
    "kinetic": (
        [*FFJORD, "--kinetic", "0.5"],
        lambda c, m: {b.weights["kinetic_weight"] for b in cnf_blocks(m)} == {0.5},
    ),
    "jacobian-frobenius": (
        [*FFJORD, "--jacobian-frobenius", "0.25"],
        lambda c, m: {b.weights["jacobian_weight"] for b in cnf_blocks(m)} == {0.25},
    ),
    "solver": (
        FFJORD,
        lambda c, m: (
            {(b.solve_options["method"], b.solve_options["solver_steps"]) for b in cnf_blocks(m)} == {("rk4", 3)}
        ),
    ),
    "field": (
        ["--flow", "ffjord", "--num-steps", "1", "--dataset", "mnist", "--field", "conv"],
        lambda c, m: {type(b.net).__name__ for b in cnf_blocks(m)} == {"ConvODENet"},
    ),
    "learn-time": ([*FFJORD, "--learn-time"], lambda c, m: all(b.time.learn for b in cnf_blocks(m))),
    "learn-time-default": (FFJORD, lambda c, m: not any(b.time.learn for b in cnf_blocks(m))),
    "num-train": (["--num-train", "500"], lambda c, m: c["num_train"] == 500),
    "dequantization": (
        ["--dataset", "mnist", "--dequantization", "variational"],
        lambda c, m: c["dequantization"] == "variational",
    ),
    "dequantization-default": (["--dataset", "mnist"], lambda c, m: c["dequantization"] == "uniform"),
    "conditional": (["--conditional"], lambda c, m: c["conditional"] is True),
    "base": (["--base", "made"], lambda c, m: type(m.base).__name__ == "MADEBase"),
    "base-default": ([], lambda c, m: type(m.base).__name__ == "StandardNormalBase"),
    "base-components": (
        ["--base", "mixture", "--base-components", "5"],
        lambda c, m: type(m.base).__name__ == "MixtureBase" and m.base.loc.shape[0] == 5,
    ),
    "learned-prior": (
        ["--flow", "glow", "--num-levels", "2", "--learned-prior"],
        lambda c, m: any(getattr(x, "prior", None) is not None for x in m.modules()),
    ),
    "rezero": (["--rezero"], lambda c, m: all(x.rezero for x in m.modules() if isinstance(x, Coupling))),
    "objective-default": ([], lambda c, m: c["objective"] == "likelihood" and c["flow_matching"] is None),
    "objective": (
        ["--flow", "ffjord", "--num-steps", "1", "--objective", "flow-matching"],
        lambda c, m: c["objective"] == "flow-matching" and c["flow_matching"] == density.FlowMatching(),
    ),
    "coupling": (
        ["--flow", "ffjord", "--num-steps", "1", "--objective", "flow-matching", "--coupling", "ot"],
        lambda c, m: c["flow_matching"].coupling == "ot" and c["flow_matching"].sigma_min == 0,
    ),
    "sigma-min": (
        ["--flow", "ffjord", "--num-steps", "1", "--objective", "flow-matching", "--sigma-min", "0.01"],
        lambda c, m: c["flow_matching"] == density.FlowMatching("independent", 0.01),
    ),
    "epochs": (["--epochs", "3"], lambda c, m: c["config"].epochs == 3),
    "batch-size": (["--batch-size", "32"], lambda c, m: c["config"].batch_size == 32),
    "lr": (["--lr", "0.01"], lambda c, m: c["config"].lr == 0.01),
    "patience": (["--patience", "7"], lambda c, m: c["config"].patience == 7),
    "clip-norm": (["--clip-norm", "2.5"], lambda c, m: c["config"].clip_norm == 2.5),
    "seed": (["--seed", "4"], lambda c, m: c["config"].seed == 4),
    "device": (["--device", "cpu"], lambda c, m: c["device"] == "cpu"),
    "no-progress": (["--no-progress"], lambda c, m: c["progress"] is False),
    "allow-changes": (["--allow-changes"], lambda c, m: c["allow_changes"] is True),
    "log": (["--log", "tensorboard"], lambda c, m: list(c["logs"]) == ["tensorboard"]),
    "out": ([], lambda c, m: c["run_dir"].name == "run"),
}


@pytest.mark.parametrize("flags, check", DENSITY_ROWS.values(), ids=DENSITY_ROWS.keys())
def test_density_train_flag(monkeypatch, tmp_path, flags, check):
    call = recorded(monkeypatch, density, "train_density", [*DENSITY, tmp_path / "run", *flags])
    shape = (1, 8, 8) if "num_levels" in call["options"] or call["options"].get("field") == "conv" else (2,)
    assert check(call, density_flow(call["flow"], shape, **call["options"])), call
    assert not (tmp_path / "run").exists()


def test_glow_levels_are_built():
    def squeezes(levels):
        flow = density_flow("glow", (1, 8, 8), num_steps=1, hidden=4, num_levels=levels)
        return sum(type(m) is Squeeze for m in flow.modules())

    assert (squeezes(2), squeezes(3)) == (2, 3)


ENERGY_ROWS = {
    "energy": (["--energy", "U3"], lambda c: c["energy"] == "U3"),
    "flow": (["--flow", "radial"], lambda c: c["flow"] == "radial"),
    "num-flows": (["--num-flows", "5"], lambda c: c["num_flows"] == 5),
    "bins": (["--flow", "spline-coupling", "--bins", "5"], lambda c: c["flow_options"] == {"count_bins": 5}),
    "tail-bound": (
        ["--flow", "spline-autoregressive", "--tail-bound", "4"],
        lambda c: c["flow_options"] == {"bound": 4.0},
    ),
    "spline-defaults": (["--flow", "spline-coupling"], lambda c: c["flow_options"] is None),
    "steps-per-epoch": (["--steps-per-epoch", "9"], lambda c: c["steps_per_epoch"] == 9),
    "warmup": (["--warmup", "4"], lambda c: c["config"].warmup == 4),
    "epochs": (["--epochs", "3"], lambda c: c["config"].epochs == 3),
    "batch-size": (["--batch-size", "32"], lambda c: c["config"].batch_size == 32),
    "lr": (["--lr", "0.01"], lambda c: c["config"].lr == 0.01),
    "patience": (["--patience", "7"], lambda c: c["config"].patience == 7),
    "clip-norm": (["--clip-norm", "2.5"], lambda c: c["config"].clip_norm == 2.5),
    "seed": (["--seed", "4"], lambda c: c["config"].seed == 4),
    "no-progress": (["--no-progress"], lambda c: c["progress"] is False),
    "allow-changes": (["--allow-changes"], lambda c: c["allow_changes"] is True),
    "log": (["--log", "csv"], lambda c: list(c["logs"]) == ["csv"]),
    "out": ([], lambda c: c["run_dir"].name == "run"),
}


@pytest.mark.parametrize("flags, check", ENERGY_ROWS.values(), ids=ENERGY_ROWS.keys())
def test_density_energy_flag(monkeypatch, tmp_path, flags, check):
    call = recorded(monkeypatch, density, "fit_energy", [*ENERGY, tmp_path / "run", *flags])
    assert check(call), call


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*DENSITY, "RUN", "--bins", "5"], "--bins applies to --flow nsf only"),
        ([*DENSITY, "RUN", "--transform", "autoregressive"], "--transform applies to --flow nsf only"),
        (
            [*ENERGY, "RUN", "--tail-bound", "2"],
            "--tail-bound applies to --flow spline-autoregressive or spline-coupling",
        ),
        ([*DENSITY, "RUN", "--flow", "nsf", "--bins", "1"], "--bins"),
        ([*DENSITY, "RUN", "--kinetic", "1"], "--kinetic applies to --flow ffjord only"),
        ([*TRAIN, "RUN", "--flow", "iaf", "--learn-time"], "--learn-time applies to --flow ffjord only"),
        ([*DENSITY, "RUN", "--flow", "ffjord", "--solver", "rk4"], "--solver-steps"),
        ([*TRAIN, "RUN", "--flow", "ffjord", "--solver-steps", "4"], "--solver rk4"),
    ],
)
def test_spline_flags_of_another_flow_are_one_line_errors(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own checks
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


EVALUATE_ROWS = {
    "run_dir": ([], lambda c: c["run_dir"].name == "run"),
    "samples": (["--samples", "7"], lambda c: c["nll_samples"] == 7),
    "seed": (["--seed", "3"], lambda c: c["seed"] == 3),
    "device": (["--device", "cpu"], lambda c: c["device"] == "cpu"),
    "no-progress": (["--no-progress"], lambda c: c["progress"] is False),
}


@pytest.mark.parametrize("flags, check", EVALUATE_ROWS.values(), ids=EVALUATE_ROWS.keys())
def test_evaluate_flag(monkeypatch, tmp_path, flags, check):
    call = recorded(monkeypatch, experiment, "evaluate_run", ["evaluate", tmp_path / "run", *flags])
    assert check(call), call


class _Recorder(nn.Module):
    """A stand-in VAE for ``vaeflows sample``: records the count and the RNG seed it sampled with."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls = []

    def sample_images(self, num, like):
        self.calls.append((num, torch.initial_seed()))
        return torch.zeros(num, 1, 8, 8)


SAMPLE_ROWS = {
    "run_dir": ([], lambda vae, load, saved, run: load["run_dir"] == run and saved["path"] == run / "samples.png"),
    "num": (["--num", "5"], lambda vae, load, saved, run: vae.calls[0][0] == 5 and len(saved["images"]) == 5),
    "seed": (["--seed", "3"], lambda vae, load, saved, run: vae.calls[0][1] == 3),
    "out": (["--out", "{tmp}/grid.png"], lambda vae, load, saved, run: saved["path"].name == "grid.png"),
    "device": (["--device", "cpu"], lambda vae, load, saved, run: load["device"] == "cpu"),
}


@pytest.mark.parametrize("flags, check", SAMPLE_ROWS.values(), ids=SAMPLE_ROWS.keys())
def test_sample_flag(monkeypatch, tmp_path, flags, check):
    vae, saved = _Recorder(), {}
    monkeypatch.setattr(
        report, "save_images", lambda images, path, title: saved.update(images=images, path=path) or True
    )
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    load = recorded(monkeypatch, experiment, "load_run", ["sample", tmp_path / "run", *flags], (vae, {}, None))
    assert check(vae, load, saved, tmp_path / "run")


def _flags(parser: argparse.ArgumentParser) -> set:
    names = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            names.add(action.option_strings[-1].lstrip("-"))
        elif action.dest != "help":
            names.add(action.dest)
    return names - {"h", "help"}


def _commands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, (*prefix, name))
                else:
                    yield " ".join((*prefix, name)), _flags(sub)


@pytest.mark.parametrize(
    "command, rows",
    [
        ("train", TRAIN_ROWS),
        ("density train", DENSITY_ROWS),
        ("density energy", ENERGY_ROWS),
        ("evaluate", EVALUATE_ROWS),
        ("sample", SAMPLE_ROWS),
    ],
)
def test_every_flag_has_a_row(command, rows):
    flags = dict(_commands(build_parser()))[command]
    tested = {
        flag for row, (argv, _) in rows.items() for flag in [row, *(a.lstrip("-") for a in argv if a.startswith("--"))]
    }
    assert flags - tested == set(), f"flags of `vaeflows {command}` without a row in this table"


def test_config_json_records_what_was_built(tmp_path):
    out = tmp_path / "run"
    argv = [
        *TRAIN,
        out,
        "--flow",
        "iaf",
        "--latent-dim",
        "4",
        "--num-flows",
        "2",
        "--iaf-hidden",
        "8",
        "--epochs",
        "1",
        "--warmup",
        "0",
        "--nll-samples",
        "0",
        "--no-progress",
    ]
    assert main([str(a) for a in argv]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"arch": "mlp", "latent_dim": 4, "flow": "iaf", "num_flows": 2, "flow_hidden_dims": [8]}
    vae, _, _ = load_run(out, "cpu")
    assert [linear_widths(m)[0] for m in vae.flow.mades] == [8, 8]
    assert linear_widths(vae.encoder) == [300, 300]
