"""Experiment logs beside ``metrics.json``: TensorBoard event files and a CSV of the epochs.

``metrics.json`` stays the run's record; a :class:`RunLog` copies the same figures into the formats
people already read while the run goes on:

- ``"csv"``: ``RUN_DIR/metrics.csv``, one row per epoch (``epoch, train_loss, valid, beta,
  seconds``), rewritten whole and atomically after every epoch from the checkpointed history, so it
  always agrees with ``last.pt`` (after a crash and a resume too).
- ``"tensorboard"``: event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``) with
  the scalars ``loss/train``, ``loss/valid``, ``beta`` and ``seconds`` at global step = epoch, the
  test figures as ``test/<name>`` at the last epoch, and the report PNGs as images. A resumed run
  opens its writer with ``purge_step`` at the checkpointed epoch, so epochs logged by a process that
  died before checkpointing them are hidden and each epoch is read back once.

The training loop (:func:`vaeflows.infer.training.fit`) calls :meth:`RunLog.start` and
:meth:`RunLog.epoch`; the commands call :meth:`RunLog.finish` with their test figures and images.
"""

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from vaeflows.infer.training import atomic_write

__all__ = ["LOG_FORMATS", "RunLog"]

#: The formats ``--log`` takes.
LOG_FORMATS = ("tensorboard", "csv")

#: The per-epoch fields of :func:`~vaeflows.infer.training.fit`'s history, in CSV column order.
EPOCH_FIELDS = ("epoch", "train_loss", "valid", "beta", "seconds")

#: Epoch field -> TensorBoard scalar tag.
_TAGS = {"train_loss": "loss/train", "valid": "loss/valid", "beta": "beta", "seconds": "seconds"}


class RunLog:
    """Copies a run's per-epoch metrics, test figures and report images into TensorBoard and/or CSV.

    Args:
        run_dir: the run directory; the logs go into ``run_dir/metrics.csv`` and
            ``run_dir/tensorboard``.
        formats: any of :data:`LOG_FORMATS` (none: a log that writes nothing).

    Raises:
        ValueError: an unknown format.
        ImportError: ``"tensorboard"`` without the ``tensorboard`` package (raised here, before any
            training, with the command that installs it).

    Example:
        >>> import tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> log = RunLog(run_dir, ["csv"])
        >>> log.start([])
        >>> log.epoch([{"epoch": 1, "train_loss": 2.5, "valid": 2.4, "beta": 1.0, "seconds": 0.1}])
        >>> log.finish({"test_nll": 2.3})
        >>> print(open(f"{run_dir}/metrics.csv").read().strip())
        epoch,train_loss,valid,beta,seconds
        1,2.5,2.4,1.0,0.1
    """

    def __init__(self, run_dir: Path, formats: Sequence[str] = ()) -> None:
        unknown = [name for name in formats if name not in LOG_FORMATS]
        if unknown:
            raise ValueError(f"unknown log format {unknown[0]!r} (--log); known: {', '.join(LOG_FORMATS)}")
        self.run_dir = Path(run_dir)
        self.formats = tuple(dict.fromkeys(formats))
        self._writer: Any = None
        self._last_epoch = 0
        if "tensorboard" in self.formats:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs `tensorboard`)
            except ImportError:
                raise ImportError(
                    "--log tensorboard needs the tensorboard package: pip install 'vaeflows[logs]'"
                ) from None

    def start(self, history: Sequence[Mapping[str, float]]) -> None:
        """Open the logs of a run whose checkpointed epochs are ``history`` (empty: a new run)."""
        self._last_epoch = int(history[-1]["epoch"]) if history else 0
        if "tensorboard" in self.formats:
            from torch.utils.tensorboard import SummaryWriter

            # Events at steps >= purge_step, written by a process that died before checkpointing
            # them, are hidden from readers; the last checkpointed epoch is logged again.
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self._last_epoch)
            if history:
                self._add_epoch(history[-1])
                self._writer.flush()
        if "csv" in self.formats:
            self._write_csv(history)

    def epoch(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log the newest epoch of ``history`` (called after it is checkpointed)."""
        self._last_epoch = int(history[-1]["epoch"])
        if self._writer is not None:
            self._add_epoch(history[-1])
            self._writer.flush()
        if "csv" in self.formats:
            self._write_csv(history)

    def finish(self, figures: Mapping[str, Any], images: Optional[Iterable[Path]] = None) -> None:
        """Log the numeric ``figures`` (e.g. ``test_nll``) as ``final/<name>`` and the PNGs
        ``images`` (default: the run directory's report PNGs) at the last epoch; then close."""
        if self._writer is not None:
            for name, value in figures.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"final/{name}", value, self._last_epoch)
            for path in sorted(self.run_dir.glob("*.png")) if images is None else images:
                from matplotlib.image import imread  # a PNG exists only where matplotlib drew it

                image = imread(path)[..., :3]  # (H, W, 3) in [0, 1]; the alpha channel dropped
                self._writer.add_image(Path(path).stem, image, self._last_epoch, dataformats="HWC")
        self.close()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (if any); safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _add_epoch(self, record: Mapping[str, float]) -> None:
        for field, tag in _TAGS.items():
            self._writer.add_scalar(tag, record[field], int(record["epoch"]))

    def _write_csv(self, history: Sequence[Mapping[str, float]]) -> None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(EPOCH_FIELDS)
        for record in history:
            writer.writerow([record[field] for field in EPOCH_FIELDS])
        atomic_write(self.run_dir / "metrics.csv", lambda file: file.write(text.getvalue().encode()))
