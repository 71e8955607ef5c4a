"""The networks: students (ResNets, small ResNets, SReT, timm and torchvision models), heads and
weights (load, export).

May import: the base modules and fkd_ffcv.records.
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/models.py module
    from fkd_ffcv.moved import forward
    return forward('models', name)
