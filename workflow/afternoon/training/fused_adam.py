"""Adam's update of each variable by TensorFlow's fused kernel (``ResourceApplyAdam``).

tf_keras' Adam (Keras 2.11 on) updates a variable with about ten element-wise ops, each one a
pass over the variable and its two moments; the kernel Keras' older Adam used does the same
arithmetic in one pass (keras #19307: the newer optimizers are the slower ones). What the
pipeline's dense nets gain with it: BENCHMARKS.md, "Epoch throughput".

``fuse_adam`` swaps the update of one optimizer object and nothing else: it stays Keras' own
Adam, so its configuration, its slot variables, a saved model and the checkpoints are stock
Keras. The result equals Keras' update up to rounding (the kernel's vectorised arithmetic rounds
differently in the last bits); each run stays reproducible.
"""

from __future__ import annotations


def fuse_adam(optimizer):
    """``optimizer`` (a tf_keras Adam), its dense-gradient updates done by the fused kernel;
    sparse gradients, AMSGrad and an adaptive epsilon keep Keras' own update. Returns it."""
    import tensorflow as tf

    keras_update = optimizer.update_step

    def update_step(gradient, variable):
        if (
            isinstance(gradient, tf.IndexedSlices)
            or optimizer.amsgrad
            or optimizer.adaptive_epsilon
        ):
            return keras_update(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(optimizer.iterations + 1, dtype)  # as Keras' Adam counts it
        beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
        slot = optimizer._index_dict[optimizer._var_key(variable)]
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=optimizer._momentums[slot].handle,
            v=optimizer._velocities[slot].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(optimizer.learning_rate, dtype),  # a schedule's rate at this step
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(optimizer.epsilon, dtype),
            grad=gradient,
            use_locking=False,
        )

    optimizer.update_step = update_step  # this object only: its class stays Keras' Adam
    return optimizer
