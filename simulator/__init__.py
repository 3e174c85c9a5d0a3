"""simulator: physics-based bearing vibration for a fleet of machines, to disk (labelled datasets) or MQTT."""
