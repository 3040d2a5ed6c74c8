"""The Dagster layer: assets, checks, resources, IO manager, automation, jobs.

Everything here is wiring: load the inputs, call one domain function, return its metadata.
``definitions.py`` loads every module of this folder: ``assets/`` (one module per stage),
``checks``, ``resources``, ``io_manager`` (how inputs find their builds), ``code_versions``,
``metadata``, ``automation``, ``schedules``, ``jobs``, ``executor``, ``promoted_models`` (the
promotion state in the instance) and ``runs`` (runs whose process died: found, ended, their pool
slots freed).

Modules here do not use ``from __future__ import annotations``: Dagster reads the config and
resource annotations of asset functions at decoration time and cannot resolve strings.
"""
