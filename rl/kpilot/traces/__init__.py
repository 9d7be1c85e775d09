"""Request traces: readers for public trace formats and synthetic workloads, all producing `Trace`.

    load_trace(spec, fmt=None, *, service_model=None, seed=0) -> Trace
    FORMATS: format name -> one-line description
    load_coldstart_table(path) -> np.ndarray   (Huawei cold-start seconds, for the simulator)
"""

from kpilot.traces.coldstart import load_coldstart_table
from kpilot.traces.loader import FORMATS, detect_format, load_trace
from kpilot.traces.model import Trace, make_trace
from kpilot.traces.service_model import LlmServiceModel
from kpilot.traces.spec import parse_spec

__all__ = ["FORMATS", "LlmServiceModel", "Trace", "detect_format", "load_coldstart_table",
           "load_trace", "make_trace", "parse_spec"]
