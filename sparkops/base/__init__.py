"""The bottom layer, imported by everything and importing nothing else of sparkops: errors
meant for people, names, paths, units, progress lines, tables, atomic files, the CLI glue."""
