import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


@pytest.fixture
def fx():
    """Path to a fixture file under tests/fixtures/traces."""
    return lambda name: FIXTURES / name


@pytest.fixture
def real_traces() -> Path:
    """The real trace excerpts folder from KPILOT_TRACES (CI: ../shared/traces)."""
    value = os.environ.get("KPILOT_TRACES")
    if not value:
        pytest.skip("KPILOT_TRACES is not set: point it at the real trace excerpts (e.g. ../shared/traces)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"KPILOT_TRACES={value} is not a directory")
    return path
