"""The data side every Trainer twin shares: the reference's ``cycle(DataLoader(ds,
batch_size, shuffle=True))`` as a seeded, restartable order (:class:`DataOrder`) read through
a ``mindspore.dataset`` pipeline (:class:`Batches`), split between data-parallel processes
(:func:`shard`, :func:`distributed`)."""

import numpy as np

__all__ = ['DataOrder', 'EncodedSource', 'dataset_pipeline', 'shard', 'Batches', 'distributed']


class EncodedSource:
    """Random-access source for ``mindspore.dataset.GeneratorDataset``: index ``i + n * flip``
    -> ``(item,)``, so that a plain index sampler carries the flip decision too.  With
    ``flip_aware`` (the image ``Dataset``) the item is ``ds[(i, flip)]``; otherwise
    (a dataset of tensors, ``Dataset1D``) ``ds[i]``.  A dataset with ``columns`` (more than
    ``('image',)``, e.g. ``('image', 'label')``) returns a tuple per item, one value a column."""

    def __init__(self, ds, flip_aware = True):
        self.ds = ds
        self.n = len(ds)
        self.flip_aware = flip_aware
        self.columns = tuple(getattr(ds, 'columns', ('image',)))

    def __len__(self):
        return 2 * self.n

    def __getitem__(self, i):
        i = int(i)
        if not self.flip_aware:
            return (np.asarray(self.ds[i % self.n]),)
        item = self.ds[(i % self.n, i >= self.n)]
        return tuple(item) if len(self.columns) > 1 else (item,)


class DataOrder:
    """The reference's ``cycle(DataLoader(ds, batch_size, shuffle=True))`` with a seeded,
    restartable order: epoch ``e`` is the permutation (and flip coins) drawn by
    ``numpy.random.default_rng([seed, 0, e])``; batches do not cross epochs, the last one of
    an epoch is smaller when ``len(ds)`` is not a multiple of the batch size (``drop_last``
    False, as the reference).  Position = number of batches consumed, so resuming is exact."""

    def __init__(self, n, batch_size, seed, flip):
        self.n, self.batch_size, self.seed, self.flip = n, batch_size, seed, flip
        self.batches_per_epoch = -(-n // batch_size)

    def epoch(self, e):
        rng = np.random.default_rng([self.seed, 0, e])
        perm = rng.permutation(self.n)
        flips = rng.random(self.n) < 0.5 if self.flip else np.zeros(self.n, dtype=bool)
        return perm + self.n * flips.astype(np.int64)

    def locate(self, batches_consumed):
        return divmod(batches_consumed, self.batches_per_epoch)


def dataset_pipeline(source, indices, batch_sizes, workers):
    """``GeneratorDataset(source)`` read in the order ``indices``, batched by ``batch_sizes``."""
    import mindspore.dataset as msds
    data = msds.GeneratorDataset(source, column_names = list(getattr(source, 'columns', ('image',))), sampler = [int(i) for i in indices],
                                 num_parallel_workers = workers, python_multiprocessing = False)
    sizes = list(batch_sizes)
    return data.batch(lambda info: sizes[info.get_batch_num()], drop_remainder = False)


def shard(n, rank, world):
    """Bounds of ``rank``'s share of a batch of ``n`` (``numpy.array_split``'s split)."""
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


class Batches:
    """Iterator of NumPy batches from the mindspore.dataset pipeline, epoch after epoch,
    starting at ``start`` batches into the stream; counts what it hands out.  With
    ``world`` > 1 (data parallel) each process reads only its share of every batch;
    ``last`` holds ``(lo, hi, global size)`` of the batch last handed out.  A dataset of
    several columns (``ds.columns``) hands out a tuple of arrays per batch."""

    def __init__(self, ds, order, start = 0, workers = 1, rank = 0, world = 1, flip_aware = True):
        self.source = EncodedSource(ds, flip_aware)
        self.order, self.consumed, self.workers = order, start, workers
        self.rank, self.world = rank, world
        self._it = None
        self._bounds = []
        self.last = None

    def _open(self):
        e, b = self.order.locate(self.consumed)
        bs = self.order.batch_size
        idx = list(self.order.epoch(e))
        sizes, self._bounds, mine = [], [], []
        for start in range(b * bs, len(idx), bs):
            chunk = idx[start:start + bs]
            lo, hi = shard(len(chunk), self.rank, self.world)
            mine += chunk[lo:hi]
            sizes.append(hi - lo)
            self._bounds.append((lo, hi, len(chunk)))
        pipe = dataset_pipeline(self.source, mine, sizes, self.workers)
        self._it = pipe.create_tuple_iterator(output_numpy = True, num_epochs = 1)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._open()
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = None
            self._open()
            batch = next(self._it)
        batch = tuple(batch) if len(self.source.columns) > 1 else batch[0]
        self.last = self._bounds.pop(0)
        self.consumed += 1
        if self.order.locate(self.consumed)[1] == 0:
            self._it = None            # epoch done: the next batch opens the next epoch
        return batch


def distributed():
    """(rank, world size) when ``mindspore.communication.init()`` has run (``msrun``), else (0, 1)."""
    try:
        from mindspore.communication import get_group_size, get_rank
        return int(get_rank()), int(get_group_size())
    except Exception:
        return 0, 1
