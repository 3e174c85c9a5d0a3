"""gruwatch: the umbrella command line over the four packages (edge_agent, trainer, simulator, dashboards)."""

__version__ = "0.1.0"
