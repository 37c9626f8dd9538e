"""The ClearML upgrade guard: upstream lets 1.x data reach 2.x only through 1.17."""

from __future__ import annotations

import pytest

from mlstack.maintenance.clearml import upgrade_path_problem


@pytest.mark.parametrize(
    ("data", "target"), [("1.17.1", "2.3.0"), ("2.0.0", "2.3.0"), ("2.3.0", "2.3.0"), ("1.9.0", "1.17.1")]
)
def test_allowed_upgrades(data, target):
    assert upgrade_path_problem(data, target) is None


def test_a_jump_from_before_1_17_to_2_names_the_path():
    problem = upgrade_path_problem("1.16.2", "2.3.0")
    assert "upstream allows 2.x only from 1.17" in problem and "clearml/server 1.17.1" in problem


def test_a_downgrade_is_refused():
    assert "a downgrade is not possible" in upgrade_path_problem("2.3.0", "2.0.0")
