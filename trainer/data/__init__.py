"""Training data for gruwatch: every source (simulator, FEMTO, CWRU, agent exports) as `list[Run]`.

>>> from trainer.data import load_runs, split_by_machine
>>> # runs = load_runs(["../shared/data/femto/Learning_set/Bearing1_2"])
>>> # train, val = split_by_machine(runs, val_fraction=0.25, seed=0)

See docs/data.md for the formats, their quirks and how labels are derived.
"""

from trainer.data.agent import is_agent_export, load_agent_export
from trainer.data.cwru import load_cwru, load_cwru_file, parse_name
from trainer.data.events import MaintenanceEvent, apply_events, load_events_csv
from trainer.data.femto import load_femto, load_femto_bearing
from trainer.data.load import DataFormat, LoadOptions, known_formats, load_runs, register_format
from trainer.data.runs import (
    SOURCES,
    DataError,
    Run,
    RunLabels,
    fingerprint,
    resample,
    resample_run,
    split_by_machine,
    trained_on,
)
from trainer.data.sim import load_sim_dataset

__all__ = [
    "SOURCES",
    "DataError",
    "DataFormat",
    "LoadOptions",
    "MaintenanceEvent",
    "Run",
    "RunLabels",
    "apply_events",
    "fingerprint",
    "is_agent_export",
    "known_formats",
    "load_agent_export",
    "load_cwru",
    "load_cwru_file",
    "load_events_csv",
    "load_femto",
    "load_femto_bearing",
    "load_runs",
    "load_sim_dataset",
    "parse_name",
    "register_format",
    "resample",
    "resample_run",
    "split_by_machine",
    "trained_on",
]
