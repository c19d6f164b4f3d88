"""What a run tells as it goes: progress bars, one row per epoch on stdout, the images it could not read.

**Progress bars** (:func:`progress_bar`): ``tqdm.auto``, i.e. text on stderr in a terminal and a
widget in a notebook. A notebook keeps, beside the widget, a text copy of the bar as it was when it
appeared (``epoch 1/3:   0%|``), which is what a saved notebook (or Voila, or GitHub) shows once the
widget is gone. So when a bar closes it replaces its output: with nothing (``leave=False``, as the
epoch bars) or with the widget and a text copy of its last state, and a finished run leaves no frozen
``0%`` bars behind.

**The epoch table** (:class:`EpochTable`): the header once, then one fixed-width row per finished
epoch on stdout (progress bars stay on stderr); a value not measured that epoch (validation between
``eval_every`` epochs) is ``-``::

      epoch  train loss  train top-1  val loss  val top-1  val top-5        lr    img/s  seconds
        1/3      2.2931        14.06    2.2011      21.88      60.94  1.00e-03    105.3     12.2

With EMA a column ``ema top-1`` follows ``val top-5``.

**Decode failures** (:class:`FailureLog`): an image that passed the build but fails to decode while
training is served by a neighbouring one and recorded in its dataset's ``report.failed``
(:class:`swiftlib.data.ImageListDataset`). With DataLoader workers (or several processes) each
process holds its own copy of the dataset, so its records would stay there: the loaders read the
datasets through :class:`FailureLog`, which appends every new record as one JSON line
``{"dataset": "train" | "val", "path", "reason"}`` to ``out/decode_failures.jsonl`` (one ``write`` of
an ``O_APPEND`` file per item: lines of concurrent writers do not interleave). At the end of every
epoch :func:`write_data_report` merges that file into the main process's reports (each path and reason
once) and rewrites ``out/data_report.json``. No tensors here: reports, rows and lines of text.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from IPython.display import display as ipython_display
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from tqdm.notebook import tqdm as notebook_tqdm

from swiftlib.io import atomic_write_json
from swiftlib.train.files import explain_disk_full

__all__ = ["DECODE_LOG", "EPOCH_COLUMNS", "progress_bar", "EpochTable", "FailureLog", "merge_failures",
           "write_data_report"]

#: The file in ``out`` that every process appends its decode failures to.
DECODE_LOG = "decode_failures.jsonl"

#: The epoch table: ``(metrics key, header, width, format)``; ``epoch`` is written ``k/epochs``.
EPOCH_COLUMNS = (("epoch", "epoch", 7, "{}"), ("train_loss", "train loss", 10, "{:.4f}"),
                 ("train_top1", "train top-1", 11, "{:.2f}"), ("val_loss", "val loss", 8, "{:.4f}"),
                 ("val_top1", "val top-1", 9, "{:.2f}"), ("val_top5", "val top-5", 9, "{:.2f}"),
                 ("ema_val_top1", "ema top-1", 9, "{:.2f}"), ("lr", "lr", 8, "{:.2e}"),
                 ("img_per_s", "img/s", 8, "{:.1f}"), ("epoch_seconds", "seconds", 7, "{:.1f}"))


class _NotebookBar(tqdm):
    """``tqdm.auto``'s widget bar (only built when that is the notebook one), shown through a display
    handle so that closing it with ``leave=False`` can replace its output (widget and text copy) by nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, display=False, **kwargs)
        self._handle = ipython_display(self.container, display_id=True)
        self.displayed = True

    def close(self):
        super().close()
        if self._handle is None:
            return
        if self.leave:  # the widget stays; its text copy shows the end, not the start
            self._handle.update(self.container)
        else:
            self._handle.update({"text/plain": ""}, raw=True)
        self._handle = None


def progress_bar(**kwargs) -> tqdm:
    """A ``tqdm.auto`` bar with tqdm's arguments; in a notebook, one that leaves no output behind when
    closed with ``leave=False`` (see the module docstring)."""
    if issubclass(tqdm, notebook_tqdm) and not kwargs.get("disable"):
        return _NotebookBar(**kwargs)
    return tqdm(**kwargs)


class EpochTable:
    """The per-epoch summary table of a run of ``epochs`` epochs (``ema``: with the EMA column)."""

    def __init__(self, epochs: int, ema: bool = False):
        self.epochs = epochs
        self.columns = [c for c in EPOCH_COLUMNS if ema or c[0] != "ema_val_top1"]
        self.header_printed = False

    def header(self) -> str:
        return "  ".join(f"{title:>{width}}" for _, title, width, _ in self.columns)

    def row(self, metrics: dict[str, Any]) -> str:
        """One metrics row (as in ``metrics.csv``) as a line of the table."""
        cells = []
        for key, _, width, fmt in self.columns:
            value = metrics.get(key)
            text = f"{value}/{self.epochs}" if key == "epoch" else "-" if value is None else fmt.format(value)
            cells.append(f"{text:>{width}}")
        return "  ".join(cells)

    def print_row(self, metrics: dict[str, Any]) -> None:
        """Print the row on stdout, after the header the first time."""
        if not self.header_printed:
            print(self.header(), flush=True)
            self.header_printed = True
        print(self.row(metrics), flush=True)


class FailureLog(Dataset):
    """``dataset`` as it is (same items, same length), with every decode failure that reading an item
    adds to ``dataset.report.failed`` appended to ``log`` as a JSON line naming ``role``."""

    def __init__(self, dataset: Dataset, log: str | os.PathLike, role: str):
        self.dataset, self.log, self.role = dataset, str(log), role

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        report = getattr(self.dataset, "report", None)
        before = len(report.failed) if report is not None else 0
        out = self.dataset[item]
        if report is not None and len(report.failed) > before:
            self._append(report.failed[before:])
        return out

    def _append(self, failed: list) -> None:
        lines = "".join(json.dumps({"dataset": self.role, "path": str(p), "reason": str(r)}) + "\n" for p, r in failed)
        try:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode("utf-8"))  # one write: whole lines, never mixed with another process's
            finally:
                os.close(fd)
        except OSError as e:
            warnings.warn(f"could not record a decode failure in {self.log} ({e}); it is still named above",
                          RuntimeWarning, stacklevel=2)


def merge_failures(reports: dict[str, Any], log: Path) -> int:
    """Add the records of ``log`` to the reports (``{"train": report, "val": report}``) that do not hold
    them yet; returns how many were added. A line cut short by a killed process is ignored."""
    if not log.is_file():
        return 0
    added = 0
    held = {role: {tuple(f) for f in r.failed} for role, r in reports.items()}  # what each report holds already
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            report, entry = reports.get(rec["dataset"]), (rec["path"], rec["reason"])
        except (ValueError, KeyError, TypeError):
            continue
        if report is not None and entry not in held[rec["dataset"]]:
            report.failed.append(entry)
            held[rec["dataset"]].add(entry)
            added += 1
    return added


def write_data_report(out: Path, train: Dataset, val: Dataset) -> int:
    """Merge ``out/decode_failures.jsonl`` into the datasets' reports and (re)write ``out/data_report.json``
    (``[train report, val report]``, those that exist); returns how many failures were new."""
    reports = {role: getattr(d, "report", None) for role, d in (("train", train), ("val", val))}
    reports = {role: r for role, r in reports.items() if r is not None}
    added = merge_failures(reports, out / DECODE_LOG)
    with explain_disk_full(out / "data_report.json"):
        atomic_write_json(out / "data_report.json", [dataclasses.asdict(r) for r in reports.values()])
    return added
