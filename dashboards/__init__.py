"""dashboards: the live fleet view in the browser and the trainer's evaluation report."""
