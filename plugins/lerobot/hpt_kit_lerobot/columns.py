"""Parquet rows of one episode, and numeric columns as (T, D) arrays.

LeRobot stores a feature of shape (1,) as a plain number per row, (D,) as a list or fixed-size
list, and (A, B) as nested lists; every row of a feature must hold the same number of values, and a
row that does not (a ragged vector) or a missing value makes the episode unreadable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hpt_kit_lerobot.meta import EpisodeProblem, EpisodeRef

LIST_TYPES = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


class RowReader:
    """Reads one episode's rows at a time. v3 data files hold many episodes: only the row groups
    covering the episode are read, and the open file is kept while consecutive episodes use it."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._file: pq.ParquetFile | None = None
        self._group_starts: list[int] = []

    def read(self, ref: EpisodeRef, columns: list[str]) -> pa.Table:
        if not ref.data.exists():
            raise EpisodeProblem(f"{ref.data}: data file of episode {ref.index} not found")
        try:
            if ref.rows is None:
                return pq.read_table(ref.data, columns=columns)
            return self._rows(ref, columns)
        except (OSError, pa.ArrowException) as exc:
            raise EpisodeProblem(f"{ref.data}: episode {ref.index} cannot be read ({exc})") from None

    def _rows(self, ref: EpisodeRef, columns: list[str]) -> pa.Table:
        if self._path != ref.data:
            self._file = pq.ParquetFile(ref.data)
            self._path = ref.data
            sizes = [self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)]
            self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        assert self._file is not None and ref.rows is not None
        first, stop = ref.rows
        starts = self._group_starts
        groups = [g for g in range(len(starts) - 1) if starts[g] < stop and starts[g + 1] > first]
        if stop > starts[-1] or not groups:
            table = self._file.schema_arrow.empty_table().select(columns)
        else:
            table = self._file.read_row_groups(groups, columns=columns).slice(first - starts[groups[0]], stop - first)
        if _holds_episode(table, ref.index, stop - first):
            return table
        # The rows are not where meta/episodes puts them (a file rewritten by hand, say): find them
        # by their episode_index, with row-group statistics skipping the groups that cannot hold it.
        table = pq.read_table(ref.data, columns=columns, filters=[("episode_index", "=", ref.index)])
        if table.num_rows != stop - first:
            raise EpisodeProblem(
                f"{ref.data}: meta/episodes gives episode {ref.index} {stop - first} rows ({first}:{stop} in this "
                f"file), but the file holds {table.num_rows} rows with that episode_index"
            )
        return table


def _holds_episode(table: pa.Table, episode: int, rows: int) -> bool:
    if table.num_rows != rows:
        return False
    if "episode_index" not in table.column_names or rows == 0:
        return True
    return pc.unique(table.column("episode_index")).to_pylist() == [episode]


def check_episode_rows(table: pa.Table, ref: EpisodeRef) -> None:
    """The rows read are the episode's: the ``episode_index`` column, where present, says so."""
    if "episode_index" not in table.column_names or table.num_rows == 0:
        return
    found = pc.unique(table.column("episode_index")).to_pylist()
    if found != [ref.index]:
        raise EpisodeProblem(
            f"{ref.data}: rows {ref.rows} given for episode {ref.index} hold episode_index {found}; "
            "meta/episodes and the data file disagree"
        )


def vectors(column: pa.ChunkedArray, key: str, where: str) -> np.ndarray:
    """A numeric column as (T, D): scalars become (T, 1), nested lists are flattened per row."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count:
        raise EpisodeProblem(f"{where}: key {key!r} has {array.null_count} missing values")
    values, width = _flatten(array, key, where)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
        raise EpisodeProblem(f"{where}: key {key!r} holds {values.type}, not numbers")
    out = values.to_numpy(zero_copy_only=False)
    dtype = np.float64 if out.dtype == np.float64 else np.float32
    # A copy of its own: a zero-copy view would keep the whole row group's buffer alive for as long
    # as the writer buffers these few rows (a serial import of 10,000 episodes grew to 0.9 GB).
    return np.array(out, dtype=dtype, copy=True).reshape(len(array), width)


def _flatten(array: pa.Array, key: str, where: str) -> tuple[pa.Array, int]:
    """The innermost values of a (nested) list array and how many of them each row holds."""
    if not any(test(array.type) for test in LIST_TYPES):
        return array, 1
    if array.null_count:
        raise EpisodeProblem(f"{where}: key {key!r} has {array.null_count} missing values")
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise EpisodeProblem(
            f"{where}: key {key!r} is ragged: row 0 holds {lengths[0]} values, row {bad} holds {lengths[bad]}"
        )
    inner, width = _flatten(array.flatten(), key, where)
    return inner, width * (int(lengths[0]) if len(lengths) else 0)
