"""The command lines, one module each, thin: parse, check (before torch or ffcv loads), call the
package. write.py (fkd-write), train.py (fkd-train), eval_teacher.py (fkd-eval-teacher),
probe.py (fkd-probe), inspect_beton.py (fkd-inspect), plot.py (fkd-plot), demo.py and its
data steps demo_steps.py (fkd-demo); common.py holds what they share. Exit status: 0, 1 for an
error in the run or in the data, 2 for options, 130 for Ctrl-C.

Enters: command lines (argv) and recipes. Leaves: exit statuses, what each command prints, and
the files the package writes for it.
May import: everything.
"""
