"""What a crop record is: its box and flip, the resize that cuts it, and the stored forms of a
soft label (top-k codes) and of a teacher embedding (int8). (The manifest that describes a
beton's records is data/manifest.py's: the writer publishes it with the beton.)

Enters: decoded images and teacher outputs. Leaves: numpy arrays in the stored layout.
May import: the base modules and fkd_ffcv.data.
"""
