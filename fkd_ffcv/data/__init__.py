"""Images in, betons out, and betons read back: sources (image folders, Fashion-MNIST, synthetic
photos), the writer that never leaves half a file under its final name, the FFCV fields this
project stores, the header check (numpy only) and the reader.

May import: the base modules (fkd_ffcv.errors, defaults, files, progress).
"""
