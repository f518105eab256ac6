"""Row access on memory-mapped Arrow tables of images that never reads the whole table into memory.

`pa.Table.take` first concatenates each column's chunks, i.e. copies every image of a run into
memory to pick a few rows; these helpers take rows one record batch at a time, without that copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa


def batches_at(table: pa.Table, indices: Sequence[int], batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
    """The rows at ascending `indices`, as record batches (a slice of at most `batch_rows` rows each)."""
    position, offset = 0, 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        end = offset + batch.num_rows
        local = []
        while position < len(indices) and indices[position] < end:
            local.append(indices[position] - offset)
            position += 1
        if local:
            yield batch.take(pa.array(local, type=pa.int64()))
        offset = end
        if position == len(indices):
            return


def take(table: pa.Table, indices: Sequence[int]) -> pa.Table:
    """`table.take(indices)` for ascending indices, without copying the rest of the table."""
    return pa.Table.from_batches(list(batches_at(table, indices)), schema=table.schema)
