"""The anomaly score of a frame: the mean squared error of its predicted latent code.

One definition in TensorFlow (training, evaluation, the serving export) and one in NumPy (the
streaming detector and the benchmark, which hold the codes as arrays); both compute in float32.
"""

import numpy as np
import tensorflow as tf


def latent_error(predicted_latent, observed_latent):
  """Mean over latent elements of (z_hat - z)^2, one value per example: [B, ...] -> [B]."""
  error = tf.square(tf.cast(predicted_latent, tf.float32) - tf.cast(observed_latent, tf.float32))
  return tf.reduce_mean(error, axis=tf.range(1, tf.rank(error)))


def latent_error_numpy(predicted_latent: np.ndarray, observed_latent: np.ndarray) -> np.ndarray:
  """`latent_error` on NumPy arrays: float32 squares, mean per example, [B, ...] -> [B]."""
  error = np.square(np.asarray(predicted_latent, np.float32) -
                    np.asarray(observed_latent, np.float32))
  return np.mean(error.reshape(len(error), -1), axis=1, dtype=np.float32)
