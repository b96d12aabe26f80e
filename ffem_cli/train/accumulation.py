"""Gradient accumulation that also works under ``tf.distribute``.

Keras's own ``gradient_accumulation_steps`` decides between "update" and
"accumulate" with a ``cond`` inside each replica, and both branches all-reduce
or merge across replicas there; TensorFlow refuses that ("`merge_call` called
while defining a new graph"). Here, with several replicas, the gradients are
all-reduced first, in the replica context, and the ``cond`` runs in the
cross-replica context, where each branch only updates variables device by
device. One replica, or another backend, takes Keras's path unchanged.

The arithmetic is Keras's: every N-th batch updates with
``(g + sum of the N-1 accumulated g) / N`` and resets the accumulators.
"""

from __future__ import annotations

import keras


class DistributedAccumulation:
    """Mixin placed before a Keras optimizer class (see ``accumulating``)."""

    def _backend_apply_gradients(self, grads, trainable_variables):
        if not self.gradient_accumulation_steps or keras.backend.backend() != "tensorflow":
            return super()._backend_apply_gradients(grads, trainable_variables)
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return super()._backend_apply_gradients(grads, trainable_variables)
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        accumulators = [self._accumulated_gradients[self._get_variable_index(v)].value for v in trainable_variables]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        steps = self.gradient_accumulation_steps
        is_update_step = (self._iterations + 1) % steps == 0

        def per_device(distribution, summed, variables, accumulators):
            def update():
                self._apply_weight_decay(variables)
                for grad, var, acc in zip(summed, variables, accumulators, strict=True):
                    distribution.extended.update(var, self._update_one, args=(grad, acc), group=False)
                    distribution.extended.update(acc, lambda a: a.assign(tf.zeros_like(a)), group=False)
                return tf.constant(True)

            def accumulate():
                for grad, acc in zip(summed, accumulators, strict=True):
                    distribution.extended.update(
                        acc, lambda a, g: a.assign_add(tf.cast(g, a.dtype)), args=(grad,), group=False
                    )
                return tf.constant(False)

            tf.cond(is_update_step, update, accumulate)

        context.merge_call(per_device, args=(summed, variables, accumulators))

    def _update_one(self, var, grad, acc):
        """One variable's update with the mean of the accumulated and the current gradient (on one device)."""
        mean = (grad + acc) / self.gradient_accumulation_steps
        (mean,) = self._clip_gradients([mean])
        self.update_step(mean, var, self.learning_rate)


class SGD(DistributedAccumulation, keras.optimizers.SGD):
    pass


class Adam(DistributedAccumulation, keras.optimizers.Adam):
    pass


class AdamW(DistributedAccumulation, keras.optimizers.AdamW):
    pass


class Adagrad(DistributedAccumulation, keras.optimizers.Adagrad):
    pass
