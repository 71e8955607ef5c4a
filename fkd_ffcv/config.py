"""fastargs plumbing shared by the top-level scripts: parse, validate, fail loudly."""
from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Optional

from fastargs import get_current_config
from fastargs.validation import Checker


class Flag(Checker):
    """A boolean that also reads 'false'/'0' from the command line correctly
    (fastargs' own Bool turns any non-empty string into True)."""

    def check(self, value):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ('1', 'true', 'yes', 'on'):
            return True
        if text in ('0', 'false', 'no', 'off'):
            return False
        raise ValueError(value)

    def help(self):
        return "true or false"


def load_config(description: str, aliases: Optional[dict] = None):
    """Collect `--config-file` YAML/JSON and `--section.key=value` options; exit 2 on errors.
    `aliases` maps short flags to options, e.g. {'--resume': '--training.resume=true'}."""
    if aliases:
        sys.argv[1:] = [aliases.get(arg, arg) for arg in sys.argv[1:]]
    config = get_current_config()
    parser = ArgumentParser(description=description)
    config.augment_argparse(parser)
    config.collect_argparse_args(parser)
    errors = config.validate(mode='errordict')
    if errors:
        for path, error in errors.items():
            param = config.entries[path]
            got = config.content.get(path, '')
            print(f"error: --{'.'.join(path)}: expected {param.checker.help()}, got {got!r}"
                  + (" (required)" if type(error).__name__ == 'MissingValueError' else ''),
                  file=sys.stderr)
        sys.exit(2)
    return config


def section(config, name: str) -> dict:
    """The values of one fastargs section as a plain dict (defaults filled in)."""
    return {path[1]: config[path] for path in config.entries if path[0] == name}
