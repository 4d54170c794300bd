"""Fixtures of the report tests: a finished Table 2 sweep built from the paper's numbers (sweep_fixtures.py)."""

import pytest
from sweep_fixtures import table2_sweep as build_table2_sweep


@pytest.fixture
def table2_sweep(tmp_path):
    return build_table2_sweep(tmp_path)
