"""What a crop record is: its box and flip, the resize that cuts it, and the stored forms of a
soft label (top-k codes) and of a teacher embedding (int8). (The manifest that describes a
beton's records is data/manifest.py's: the writer publishes it with the beton.)

Enters: decoded images and teacher outputs (torch tensors). Leaves: crop boxes and flags as
numpy arrays, and soft labels and embeddings in their stored form as torch tensors
(soft_labels.compress, embeddings.encode; recover and decode read them back).
May import: the base modules and fkd_ffcv.data.
"""
