"""Every option section of every command and the checks between them, torch-free, so that a
wrong combination fails in a fraction of a second before torch or a teacher loads.

May import: the base modules, fkd_ffcv.data.header and fkd_ffcv.records (torch-free modules).
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/options.py module
    from fkd_ffcv.moved import forward
    return forward('options', name)
