"""Built-in jepa-core plugins, each module an ordinary pluggy plugin.

They are loaded through the ``jepa_core`` entry-point group, exactly like
third-party plugins; nothing imports them by name.
"""
