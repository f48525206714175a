"""Releases live tf.data iterators before the interpreter finalizes.

Our readers run Python (PIL decoding, NumPy drawing) inside ``Dataset.map`` through
``tf.numpy_function`` with parallel calls. If a script exits while an iterator over such a
dataset is still alive (``it = iter(dataset); next(it)`` at module level), the iterator is
destroyed during interpreter finalization; by then a TF worker thread that still has a
Python call in flight can no longer take the GIL, and the iterator's destructor waits for
it forever: the process hangs at exit (TF 2.21, Python 3.11; reproduced in
``tests/data/test_shutdown.py``).

:func:`release_iterators` runs at ``atexit``, while the interpreter is still whole: it
drops the resource of every live eager iterator, so each is torn down while its in-flight
Python calls can still finish. The attribute is TensorFlow's own (``_iterator_resource``
of ``OwnedIterator``); if a TF release renames it, the hook does nothing.
"""
from __future__ import annotations

import atexit
import gc
import warnings


def release_iterators():
    """Drops the iterator resource of every live ``tf.data`` iterator (exit-time use only)."""
    try:
        from tensorflow.python.data.ops import iterator_ops
    except ImportError:  # TensorFlow moved the module: nothing we can safely release
        return
    owned = getattr(iterator_ops, "OwnedIterator", None)
    if owned is None:
        return
    with warnings.catch_warnings():  # isinstance on a deprecated object warns (torch.distributed.reduce_op)
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, owned):
                    obj.__dict__.pop("_iterator_resource", None)
            except Exception:  # noqa: BLE001  (an object whose __class__ raises: a closed NpzFile)
                continue
    gc.collect()


atexit.register(release_iterators)
