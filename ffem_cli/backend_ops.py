"""Two operations the losses need that ``keras.ops`` lacks, each behind a backend check.

Loss code is ``keras.ops`` only (it runs on JAX too). Partial FC needs, on
TensorFlow, (1) the global batch's labels under ``tf.distribute``, where each
replica holds a slice, and (2) a row gather that reads only those rows of a
variable: ``keras.ops.take`` first reads the whole variable as a tensor, and
the optimizer's row update then makes TensorFlow copy all of it
(copy-on-write), 5× slower than ``tf.gather`` on the variable at 100k × 512.
On the other backends both are the plain operations.
"""

import keras
from keras import ops


def all_gather(values):
    """``values`` (n, ...) of this replica → (N·n, ...) of every replica, in replica order.

    The identity on one device, and on JAX / PyTorch (arrays are global there).
    """
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_gather(values, axis=0)


def gather_rows(variable, rows):
    """``variable[rows]``: (R, ...) rows of a Keras variable; on TensorFlow a sparse read
    whose gradient is an ``IndexedSlices`` of those rows."""
    if keras.backend.backend() != "tensorflow":
        return ops.take(variable, rows, axis=0)
    import tensorflow as tf

    return tf.gather(variable.value, rows)
