"""Loggers: runtime plugins enabled from YAML.

Built as ``factory(config, run_dir)``. The object implements any of the
runtime hooks of ``jepa_core.hookspecs`` (marked with ``jepa_core.hookimpl``)
and is registered with the plugin manager for the duration of the run.
"""
