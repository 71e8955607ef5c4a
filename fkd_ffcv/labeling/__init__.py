"""Teachers and what they write: one place that turns a teacher spec into a model and its
preprocessing, labelling a beton's crops with it, and the import of FKD's released label files.

Enters: a beton and teacher specs. Leaves: a labelled beton.
May import: the base modules, data, records, loading and models.
"""


def __getattr__(name: str):  # names of the former fkd_ffcv/labeling.py module
    from fkd_ffcv.moved import forward
    return forward('labeling', name)
