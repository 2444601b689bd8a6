"""Tokenized arrays in memory as full batches for `fit`, on every backend, without TensorFlow."""

import keras


class ArrayBatches(keras.utils.PyDataset):
    """Consecutive full batches of arrays held in memory, in their order, for `fit`.

    What `make_lm_datasets` returns where TensorFlow is not installed (it returns a
    `tf.data.Dataset` of the same batches where it is). A last partial batch is dropped, so every
    step costs the same and shapes stay static for XLA.

    Args:
        arrays: a structure of arrays with the same first dimension, e.g.
            `({"token_ids", "padding_mask"}, y, sample_weight)`.
        batch_size: int. Rows a batch.
        **kwargs: `keras.utils.PyDataset`'s (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:
    ```python
    batches = ArrayBatches((np.zeros((10, 4)), np.ones(10)), batch_size=4)
    len(batches)  # 2
    x, y = batches[1]  # rows 4 to 7
    ```
    """

    def __init__(self, arrays, batch_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}.")
        rows = {len(array) for array in keras.tree.flatten(arrays)}
        if len(rows) != 1:
            raise ValueError(
                f"The arrays must all have the same first dimension (rows), got {sorted(rows)}."
            )
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self._rows = rows.pop()

    def __len__(self):
        return self._rows // self.batch_size

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of {len(self)} batches.")
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return keras.tree.map_structure(lambda array: array[rows], self.arrays)
