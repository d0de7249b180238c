"""The monitoring-platform role (district, municipal, police) — later issue.

This package lives in ``platform/gbplatform`` and ``platform/`` has no
``__init__.py`` on purpose: ``platform`` is a standard-library module name.
"""
