"""daml_tf: decoupled appearance and motion learning for video anomaly detection."""
