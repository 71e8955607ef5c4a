"""Images in, betons out, and betons read back: sources (image folders, Fashion-MNIST, synthetic
photos), the writer that never leaves half a file under its final name (writer, write_workers,
safe_write) and the copy, the FFCV fields this project stores, the header check (numpy only),
the reader, and the manifest beside each beton (torch- and ffcv-free, as is header).

Enters: image folders, Fashion-MNIST or synthetic photos, and option sections. Leaves: beton
files with their manifests, and a reader (Beton) of both.
May import: the base modules (fkd_ffcv.errors, defaults, files, progress).
"""
