"""Hypothesis profiles for the hostile-input suite, chosen by ``KEYLIMIT_HYPOTHESIS_PROFILE``.

    default   about 300 generated cases per target (the whole folder in well under a minute)
    nightly   10,000 cases per target

The profile is applied per test (``@CASES``), not loaded globally, so that other folders'
Hypothesis tests keep their own settings when the whole suite runs.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILE_VAR = "KEYLIMIT_HYPOTHESIS_PROFILE"
EXAMPLES = {"default": 300, "nightly": 10_000}

for _name, _examples in EXAMPLES.items():
    settings.register_profile(
        f"keylimit-hostile-{_name}",
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )

PROFILE = os.environ.get(PROFILE_VAR) or "default"
if PROFILE not in EXAMPLES:
    raise pytest.UsageError(f"{PROFILE_VAR}: unknown profile {PROFILE!r} (profiles: {', '.join(EXAMPLES)})")
CASES = settings.get_profile(f"keylimit-hostile-{PROFILE}")
"""The settings every hostile-input target runs with."""


def pytest_report_header() -> str:
    return f"keylimit hostile input: profile {PROFILE!r}, {CASES.max_examples} cases per target"
