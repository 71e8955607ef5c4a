"""The networks: students (ResNets, small ResNets, SReT, timm and torchvision models), heads and
weights (load, export).

Enters: an architecture name and options, or a checkpoint. Leaves: a torch module (and an
export file). `build_model` (students.py) is the one constructor; `fkd_ffcv.models.build_model`
names it too. Inside, imports go one way: resnets, sret, heads -> weights -> timm_models ->
students (the registry) -> exports.
May import: the base modules only (it needs nothing of data, records or loading).
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/models.py module
    from fkd_ffcv.moved import forward
    return forward('models', name)
