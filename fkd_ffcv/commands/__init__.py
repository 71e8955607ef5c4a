"""The command lines (fkd-write, fkd-train, fkd-eval-teacher, fkd-probe, fkd-inspect, fkd-plot,
fkd-demo), thin: parse, check, call the package.

May import: everything.
"""
