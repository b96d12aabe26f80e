"""The one cross-replica collective the losses need, behind a backend check.

Loss code is ``keras.ops`` only; Partial FC must still see the global
batch's labels under ``tf.distribute``, where each replica holds a slice.
On the JAX and PyTorch backends (one process, global arrays) and on one
TensorFlow device this is the identity.
"""

import keras


def all_gather(values):
    """``values`` (n, ...) of this replica → (N·n, ...) of every replica, in replica order."""
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_gather(values, axis=0)
