"""Constants shared by the evaluation tests (a conftest module is not importable by name reliably)."""

import sys
from pathlib import Path

KPILOT = Path(sys.executable).with_name("kpilot")
TRACE = "synthetic:bursty:rate=3,duration=900,seed=11"
