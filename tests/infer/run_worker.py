"""Run by tests/infer/test_run_safety.py in a process of its own (not collected by pytest).

    python -m tests.infer.run_worker RUN_DIR THREADS

Trains the noisy toy of ``tests/infer/test_run_safety.py`` (``fit_toy``, 3 epochs) into
``RUN_DIR`` with ``THREADS`` torch threads, and stops in the middle of writing epoch 2's
``last.pt``: half of it is in ``last.pt.tmp`` when the worker prints ``writing`` and sleeps,
holding the run's lock, until the test kills it.
"""

import io
import sys
import time
from pathlib import Path

import torch

from tests.infer.test_run_safety import fit_toy
from vaeflows.infer import training


def main(run_dir: str, threads: str) -> None:
    torch.set_num_threads(int(threads))
    save = training._save

    def stalling_save(obj: dict, path: Path) -> None:
        if path.name != "last.pt" or obj["state"]["epoch"] != 2:
            return save(obj, path)

        def write_half_and_wait(file) -> None:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            print("writing", flush=True)
            time.sleep(600)

        training.atomic_write(path, write_half_and_wait)

    training._save = stalling_save
    fit_toy(Path(run_dir), epochs=3)


if __name__ == "__main__":
    main(*sys.argv[1:])
