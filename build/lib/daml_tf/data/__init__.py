"""Frames layout, frame labels and the tf.data input pipeline."""
