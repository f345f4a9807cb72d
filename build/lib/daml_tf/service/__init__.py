"""Building blocks of the camera service (`python -m daml_tf.serve --config=cameras.yaml`).

Pure Python and NumPy, no TensorFlow: the YAML configuration (config), zone masks on the latent
grid (masks), the alarm state machine (alarms), the retention of event files (retention) and
the event-level evaluation of alarms on labelled video (event_metrics).
"""
