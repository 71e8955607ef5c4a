"""What a crop record is: its box and flip, the resize that cuts it, and the stored forms of a
soft label (top-k codes) and of a teacher embedding (int8), plus the manifest beside a beton.

Enters: decoded images and teacher outputs. Leaves: numpy arrays in the stored layout.
May import: the base modules and fkd_ffcv.data.
"""
