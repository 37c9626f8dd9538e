"""The run configuration a ClearMLTracker gets: a dict or an OmegaConf DictConfig with an optional
`clearml` section (project, task_name, tags, offline, detect_repository)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlstack.tracking.errors import ClearMLConfigError


def config_to_dict(cfg: Any) -> dict:
    """A plain dict from a mapping or an OmegaConf DictConfig (omegaconf is imported only then)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ClearMLConfigError(
            f"cfg must be a dict or an OmegaConf DictConfig, got {type(cfg).__name__} ({cfg!r:.80}): "
            "pass e.g. {'clearml': {'project': 'housing'}}"
        )
    return dict(cfg)


def project_settings(cfg: dict, default_project: str) -> dict:
    """The clearml section, with `project` set to `default_project` when the config names none."""
    section = cfg.get("clearml")
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ClearMLConfigError(
            f"cfg's clearml section must be a mapping, got {type(section).__name__} ({section!r:.80}): "
            "e.g. `clearml: {project: <project name>}`"
        )
    section = {"project": default_project, **section} if section.get("project") is None else dict(section)
    if not isinstance(section["project"], str) or not section["project"].strip():
        raise ClearMLConfigError(
            f"clearml.project must be a non-empty string, got {section['project']!r}: "
            "set `clearml: {project: <project name>}`, or leave it out to use CLEARML_DEFAULT_PROJECT"
        )
    tags = section.get("tags") or []
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise ClearMLConfigError(f"clearml.tags must be a list of strings, got {tags!r}: e.g. tags: [baseline]")
    return section
