"""Write an image data set to FFCV betons, and FKD crop records with soft labels into them:
the `fkd-write` command (fkd_ffcv/commands/write.py), run from a checkout. `--help` lists the options."""
import sys

from fkd_ffcv.commands.write import write

if __name__ == '__main__':
    sys.exit(write())
