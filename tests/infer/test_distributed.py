"""Data-parallel training with torchrun: 2 CPU processes (gloo) against 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vaeflows.infer.training import run_lock

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(nproc, *args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    result = subprocess.run(
        [*command, str(WORKER), *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def load(path):
    return torch.load(path, weights_only=False)


def test_two_processes_of_50_give_the_gradient_of_one_process_of_100(tmp_path):
    torchrun(2, "grad", tmp_path / "two")
    torchrun(1, "grad", tmp_path / "one")
    one = load(tmp_path / "one" / "grad_rank0.pt")
    for rank in (0, 1):
        two = load(tmp_path / "two" / f"grad_rank{rank}.pt")
        assert two.keys() == one.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)


def test_processes_stay_identical_and_a_run_resumes_on_another_process_count(tmp_path):
    out = tmp_path / "out"
    log = torchrun(2, "train", out, 2).stdout
    first, second = load(out / "params_rank0.pt"), load(out / "params_rank1.pt")
    for name in first:
        assert torch.equal(first[name], second[name]), name
    run = out / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["processes"] == 2 and config["effective_batch_size"] == 100
    assert log.count("epoch    1") == 1  # rank 0 logs, rank 1 does not
    # resume the 2-process run on 1 process for a third epoch
    torchrun(1, "train", out, 3)
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert load(run / "last.pt")["world_size"] == 1


def test_a_run_locked_by_another_process_stops_every_rank_at_once(tmp_path):
    out = tmp_path / "out"
    with run_lock(out / "run"):  # this process holds it: rank 0 cannot take it
        result = torchrun(2, "train", out, 1, check=False)  # rank 1 must not wait for rank 0 forever
    assert result.returncode != 0
    assert result.stderr.count(f"in use by pid {os.getpid()}") >= 2  # both ranks say why
    assert not (out / "run" / "config.json").exists()
