"""A CSV file of numeric rows that a resumed run continues: `pld-robot learn`'s and `pld-robot
distill`'s metrics.csv. A NaN is written as an empty cell and read back as NaN."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path


class CsvRows:
    def __init__(self, path: str | Path, columns: Sequence[str], owner: str, missing_as_nan: bool):
        """`owner` names whose file it is in the error for a file with other columns; `missing_as_nan`:
        a row may leave columns out (else that is a KeyError)."""
        self.path, self.columns, self._missing_as_nan = Path(path), tuple(columns), missing_as_nan
        self.rows: list[dict[str, float]] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != self.columns:
                    raise ValueError(f"{self.path}: columns {reader.fieldnames} are not {owner}'s "
                                     f"{list(self.columns)}; move the file away to start a new one")
                self.rows = [{k: float(v) if v else math.nan for k, v in row.items()} for row in reader]

    def append(self, row: dict[str, float]) -> None:
        unknown = set(row) - set(self.columns)
        missing = [] if self._missing_as_nan else [k for k in self.columns if k not in row]
        if unknown or missing:
            raise KeyError(f"{self.path.name}: unknown column(s) {sorted(unknown)}, missing {missing}")
        full = {k: float(row.get(k, math.nan)) for k in self.columns}
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if new:
                writer.writeheader()
            writer.writerow(_cells(full))
        self.rows.append(full)

    def keep_until(self, column: str, value: float) -> None:
        """Forget (and rewrite without) the rows whose `column` is beyond `value`."""
        if any(r[column] > value for r in self.rows):
            self.rows = [r for r in self.rows if r[column] <= value]
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                for row in self.rows:
                    writer.writerow(_cells(row))


def _cells(row: dict[str, float]) -> dict[str, str]:
    return {k: "" if math.isnan(v) else f"{v:.12g}" for k, v in row.items()}
