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


def test_clearml_names_are_listed_in_all():
    import mlstack.tracking

    assert set(CLEARML_NAMES) <= set(mlstack.tracking.__all__)
    assert "ExperimentTracker" in mlstack.tracking.__all__


def test_an_unknown_name_is_still_an_attribute_error():
    import mlstack.tracking

    with pytest.raises(AttributeError, match="NoSuchTracker"):
        mlstack.tracking.NoSuchTracker  # noqa: B018
