"""The classification head's own learning rate and weight decay, and Partial FC's sparse row updates.

``with_head_settings(optimizer, head_variables, lr_mult, weight_decay)``
turns a built Keras optimizer (SGD, Adam, AdamW, ...) into one that, for the
head's variables only,

- multiplies the learning rate by ``lr_mult`` (``--head-lr-mult``);
- applies decoupled weight decay ``w ← w − lr·lr_mult·weight_decay·w``
  (``--head-weight-decay``) instead of the optimizer's global one;
- given an ``IndexedSlices`` gradient (the TensorFlow gradient of Partial FC's
  gathered centres) updates only those rows and their optimizer slots:
  SGD ``m_r ← μ·m_r − lr·g_r``, ``w_r ← w_r + μ·m_r − lr·g_r`` (Nesterov) or
  ``+ m_r``; Adam/AdamW the same Adam step restricted to the rows (the bias
  correction uses the global step count). Unsampled rows, their momentum
  and their weight decay stand still, as in Partial FC v1.

Every other variable gets the optimizer's own update. Optimizers without a
sparse rule here (or Adam with ``amsgrad``) receive the gradient densified:
correct, but every row's slots then move.
"""

from __future__ import annotations

import keras
from keras import ops


class _HeadSettings:
    """Mixin placed before the optimizer's own class (see ``with_head_settings``)."""

    head_lr_mult = 1.0
    head_weight_decay = 0.0
    head_keys = frozenset()

    def _is_head(self, variable) -> bool:
        return self._var_key(variable) in self.head_keys

    def _use_weight_decay(self, variable):
        return not self._is_head(variable) and super()._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        if not self._is_head(variable):
            return super().update_step(gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype) * self.head_lr_mult
        if _is_sparse(gradient) and self._has_sparse_rule():
            return self._sparse_update(gradient, variable, learning_rate)
        if _is_sparse(gradient):
            import tensorflow as tf

            gradient = tf.convert_to_tensor(gradient)
        if self.head_weight_decay:
            self.assign_sub(variable, variable * (learning_rate * self.head_weight_decay))
        return super().update_step(gradient, variable, learning_rate)

    def _has_sparse_rule(self) -> bool:
        if isinstance(self, keras.optimizers.Adam):
            return not self.amsgrad
        return isinstance(self, keras.optimizers.SGD)

    def _sparse_update(self, gradient, variable, learning_rate):
        """The update of the rows ``gradient.indices`` only (duplicates summed first)."""
        import tensorflow as tf

        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), position, tf.shape(rows)[0])
        weights = _gather(variable, rows)
        index = self._get_variable_index(variable)
        if isinstance(self, keras.optimizers.Adam):
            step = ops.cast(self.iterations + 1, variable.dtype)
            beta_1, beta_2 = ops.cast(self.beta_1, variable.dtype), ops.cast(self.beta_2, variable.dtype)
            m = self._momentums[index]
            v = self._velocities[index]
            m_rows = beta_1 * _gather(m, rows) + (1 - beta_1) * grad
            v_rows = beta_2 * _gather(v, rows) + (1 - beta_2) * tf.square(grad)
            self.assign(m, tf.IndexedSlices(m_rows, rows))
            self.assign(v, tf.IndexedSlices(v_rows, rows))
            alpha = learning_rate * ops.sqrt(1 - ops.power(beta_2, step)) / (1 - ops.power(beta_1, step))
            delta = -alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        elif self.momentum:
            momentum = ops.cast(self.momentum, variable.dtype)
            m = self.momentums[index]
            m_rows = momentum * _gather(m, rows) - learning_rate * grad
            self.assign(m, tf.IndexedSlices(m_rows, rows))
            delta = momentum * m_rows - learning_rate * grad if self.nesterov else m_rows
        else:
            delta = -learning_rate * grad
        if self.head_weight_decay:
            delta -= learning_rate * self.head_weight_decay * weights
        self.assign_add(variable, tf.IndexedSlices(delta, rows))


def _gather(variable, rows):
    """Rows of a variable read sparsely: a dense read would make the row update that
    follows copy the whole variable (TensorFlow's copy-on-write)."""
    import tensorflow as tf

    return tf.gather(variable.value if isinstance(variable, keras.Variable) else variable, rows)


def _is_sparse(gradient) -> bool:
    return type(gradient).__name__ == "IndexedSlices"


def with_head_settings(optimizer, head_variables, lr_mult: float = 1.0, weight_decay: float = 0.0):
    """``optimizer``, re-classed in place so the head's variables get their own rate and decay.

    ``head_variables``: the loss layer's trainable variables. ``weight_decay``
    is decoupled and replaces the optimizer's own decay for them (0 = none).
    """
    base = type(optimizer)
    optimizer.__class__ = type(f"Head{base.__name__}", (_HeadSettings, base), {})
    optimizer.head_lr_mult = float(lr_mult)
    optimizer.head_weight_decay = float(weight_decay)
    optimizer.head_keys = frozenset(optimizer._var_key(v) for v in head_variables)
    return optimizer


def configure(optimizer, loss_layer, config) -> None:
    """Apply ``config.head_lr_mult`` / ``head_weight_decay`` (< 0: ``weight_decay``) to the
    loss layer's variables; also whenever Partial FC (``sample_rate`` < 1) needs sparse updates."""
    weight_decay = config.head_weight_decay if config.head_weight_decay >= 0 else config.weight_decay
    if config.head_lr_mult != 1.0 or config.head_weight_decay >= 0 or config.sample_rate < 1.0:
        with_head_settings(optimizer, loss_layer.trainable_variables, config.head_lr_mult, weight_decay)
