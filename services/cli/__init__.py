"""The one CLI, ``hwcompress``: each area registers its own subcommands."""
