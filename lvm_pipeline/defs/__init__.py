"""The Dagster layer: assets, checks, resources, jobs and schedules, loaded by ``definitions.py``.

Everything here is wiring: load the inputs, call one domain function, return its metadata.

Modules here do not use ``from __future__ import annotations``: Dagster reads the config and
resource annotations of asset functions at decoration time and cannot resolve strings.
"""
