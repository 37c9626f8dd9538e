"""The ClearML API is importable from mlstack.tracking, and importing mlstack.tracking stays ClearML-free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CLEARML_NAMES = [
    "ClearMLConfigError",
    "ClearMLTracker",
    "ClearMLUnavailableError",
    "compare_clearml_experiments",
    "compare_models",
    "compare_registered_models",
]


def run_python(code: str) -> None:
    """Run `code` in a fresh interpreter (a clean sys.modules); fail with its stderr."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_importing_mlstack_tracking_does_not_import_clearml():
    run_python(
        """
        import sys
        import mlstack.tracking
        loaded = sorted(name for name in sys.modules if name == "clearml" or name.startswith("clearml."))
        assert not loaded, loaded
        assert "ClearMLTracker" in dir(mlstack.tracking)
        assert "clearml" not in sys.modules
        """
    )


@pytest.mark.parametrize("name", CLEARML_NAMES)
def test_clearml_names_import_from_mlstack_tracking_as_the_same_objects(name):
    run_python(
        f"""
        from mlstack.tracking import ExperimentTracker, {name}
        import mlstack.tracking.clearml
        assert {name} is getattr(mlstack.tracking.clearml, {name!r})
        """
    )


#: The part of the ClearML API mlstack.tracking leaves to mlstack.tracking.clearml (its docstring: the
#: tracker, comparisons and errors are offered, the rest is imported from the subpackage): offline sync.
LEFT_TO_THE_SUBPACKAGE = "mlstack.tracking.clearml.offline"


def test_the_clearml_names_in_all_are_what_the_clearml_subpackage_exports():
    """Held to the subpackage itself: every name it exports, but offline sync's, is listed in
    mlstack.tracking.__all__ and is the same object there; and CLEARML_NAMES, which the identity test
    above runs over, are exactly those names."""
    import mlstack.tracking
    import mlstack.tracking.clearml as clearml

    exported = {name: getattr(clearml, name) for name in clearml.__all__}
    offered = {name for name, value in exported.items() if value.__module__ != LEFT_TO_THE_SUBPACKAGE}
    listed = set(mlstack.tracking.__all__) & set(exported)
    assert {"ClearMLTracker", "compare_models", "ClearMLConfigError"} <= offered
    assert listed == offered
    assert set(CLEARML_NAMES) == listed
    for name in listed:
        assert getattr(mlstack.tracking, name) is exported[name], name
    unresolved = [name for name in mlstack.tracking.__all__ if not hasattr(mlstack.tracking, name)]
    assert not unresolved, f"mlstack.tracking.__all__ lists names it does not have: {unresolved}"
    assert "ExperimentTracker" in mlstack.tracking.__all__


def test_an_unknown_name_is_still_an_attribute_error():
    import mlstack.tracking

    with pytest.raises(AttributeError, match="NoSuchTracker"):
        mlstack.tracking.NoSuchTracker  # noqa: B018
